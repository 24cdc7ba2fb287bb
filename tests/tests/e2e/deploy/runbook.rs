//! The runbook's grpcurl commands are real: every `grpcurl` command in
//! deploy/README.md is run (its `| jq` tail cut off) against a live
//! central-manager and pod-host, and must reach the server. grpcurl checks
//! the method name, every JSON field and enum value against the server's
//! reflection before it sends anything, so a typo in the runbook fails
//! here; an answer from the server, error status included (the task id is
//! a made-up one), counts as reached. The runbook must also use every
//! CentralManager method. Where `jq` is installed the whole pipeline runs,
//! so the runbook's jq filters must at least parse and not choke on the
//! real output. Commands that speak TLS (`-cacert`, the production
//! overlay) go to a central-manager with TLS and tokens, with `$IPA_TOKEN`
//! set and `ipa-ca.crt` standing for its CA.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::process::Command;

use ipa_tests::{DEADLINE, ServerProcess};

use super::manifests::repo_root;

/// `$IPA_TOKEN` for the runbook's TLS commands.
const RUNBOOK_TOKEN: &str = "runbook-token";

/// Stands in for `TASK_ID`: a well-formed id no task has.
const FAKE_TASK_ID: &str = "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10";

/// The logical shell commands of the runbook's ```sh blocks: `\` line
/// continuations and newlines inside single quotes joined.
fn shell_commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut cur = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block && line.trim_start() == "```sh";
            cur.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        // A comment line (its apostrophes are not quotes).
        if cur.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            continue;
        }
        cur.push_str(line);
        // Inside a single-quoted string: the command goes on.
        if cur.matches('\'').count() % 2 == 1 {
            cur.push('\n');
            continue;
        }
        let cmd = std::mem::take(&mut cur).trim().to_owned();
        if !cmd.is_empty() {
            out.push(cmd);
        }
    }
    out
}

/// The command up to its first `|` outside single quotes.
fn before_pipe(cmd: &str) -> &str {
    let mut quoted = false;
    for (i, c) in cmd.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '|' if !quoted => return cmd[..i].trim_end(),
            _ => {}
        }
    }
    cmd
}

#[tokio::test]
async fn every_grpcurl_command_in_the_runbook_reaches_the_server() {
    let runbook =
        std::fs::read_to_string(repo_root().join("deploy/README.md")).expect("read runbook");
    let commands: Vec<String> = shell_commands(&runbook)
        .into_iter()
        .filter(|c| c.starts_with("grpcurl "))
        .collect();
    assert!(
        commands.len() >= 20,
        "found only {} grpcurl commands",
        commands.len()
    );

    let db = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/central.db", db.path().display());
    let central = ServerProcess::start(
        "central-manager",
        &[
            OsString::from("--listen=127.0.0.1:0"),
            OsString::from(format!("--database-url={url}")),
        ],
        &[],
        None,
    )
    .await;
    // The production shape: TLS with a certificate for the Service name
    // and token authentication.
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = ipa_tests::pki::Ca::new("runbook CA");
    let ca_path = ca.write(pki.path(), "ipa-ca.crt");
    let (cert, key) = ca
        .leaf(&["ipa-central-manager", "127.0.0.1"])
        .write(pki.path(), "server");
    let tokens = pki.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        ipa_tests::pki::token_file(&[("operator", "admin", RUNBOOK_TOKEN)]),
    )
    .expect("token file");
    let tls_url = format!("sqlite://{}/tls.db", db.path().display());
    let tls_central = ServerProcess::start(
        "central-manager",
        &[
            OsString::from("--listen=127.0.0.1:0"),
            OsString::from(format!("--database-url={tls_url}")),
            OsString::from(format!("--tls-cert={}", cert.display())),
            OsString::from(format!("--tls-key={}", key.display())),
            OsString::from(format!("--auth-tokens={}", tokens.display())),
        ],
        &[],
        None,
    )
    .await;
    let host = ServerProcess::start(
        "pod-host",
        &[OsString::from("--listen=127.0.0.1:0")],
        &[],
        None,
    )
    .await;

    let have_jq = Command::new("jq")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut used = BTreeSet::new();
    for cmd in &commands {
        let cmd = if have_jq {
            cmd.as_str()
        } else {
            before_pipe(cmd)
        };
        // The pod-host example goes through a port-forward to localhost:50052.
        let tls = cmd.contains("-cacert");
        let cmd = cmd
            .replace("ipa-ca.crt", &ca_path.display().to_string())
            .replace("TASK_ID", FAKE_TASK_ID)
            .replace("localhost:50052", &host.addr.to_string())
            .replacen(
                "grpcurl ",
                &format!("grpcurl -max-time {} ", DEADLINE.as_secs() / 4),
                1,
            );
        if let Some(m) = cmd
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ipa.v1.CentralManager/"))
        {
            used.insert(m.to_owned());
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&cmd)
            .env(
                "CM",
                if tls { tls_central.addr } else { central.addr }.to_string(),
            )
            .env("IPA_TOKEN", RUNBOOK_TOKEN)
            .env("PATH", ipa_tests::tools::path_with_venv())
            .output()
            .expect("run bash (and grpcurl: scripts/test installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A status from the server ("ERROR:\n  Code: NotFound ...") means the
        // request was well-formed; grpcurl's own failures look different.
        let server_answered = out.status.success() || text.contains("ERROR:\n  Code:");
        let client_side = text.contains("Error invoking method")
            || text.contains("error getting request data")
            || text.contains("Failed to")
            || text.contains("command not found")
            || text.contains("jq: ");
        assert!(
            server_answered && !client_side,
            "runbook command did not reach the server:\n  {cmd}\n{text}"
        );
    }

    let proto = std::fs::read_to_string(repo_root().join("proto/ipa/v1/central_manager.proto"))
        .expect("read proto");
    let all: BTreeSet<String> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .map(|m| m.trim().to_owned())
        .collect();
    let missing: Vec<&String> = all.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "the runbook has no grpcurl example for {missing:?}"
    );
}

#[test]
fn runbook_commands_are_split_like_the_shell_does() {
    let md = "```sh\n# it's a comment\nA=1\ngrpcurl -d '{\n  \"a\": 1\n}' $CM x/Y \\\n  | jq .\n# c\n```\ntext\n```\nnot sh\n```\n";
    let cmds = shell_commands(md);
    assert_eq!(
        cmds,
        vec![
            "A=1".to_owned(),
            "grpcurl -d '{\n  \"a\": 1\n}' $CM x/Y   | jq .".to_owned()
        ]
    );
    assert_eq!(
        before_pipe(&cmds[1]),
        "grpcurl -d '{\n  \"a\": 1\n}' $CM x/Y"
    );
    assert_eq!(
        before_pipe("g -d '{\"a\":\"x|y\"}' | jq"),
        "g -d '{\"a\":\"x|y\"}'"
    );
}
