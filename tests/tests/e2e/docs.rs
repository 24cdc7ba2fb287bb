//! The reference in docs/ keeps up with the code: docs/api.md names every
//! RPC, message, field and enum value of the proto, every error reason of
//! proto/src/error.rs, every event type central-manager writes, and every
//! flag and environment variable the binaries accept; and the repository's
//! markdown links only to files inside the repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use central_manager::domain::EventType;
use ipa_tests::bin_path;
use ipa_tests::tools::repo_root;
use prost::Message;
use prost_types::FileDescriptorSet;

fn api_md() -> String {
    std::fs::read_to_string(repo_root().join("docs/api.md")).expect("read docs/api.md")
}

#[track_caller]
fn assert_none_missing(what: &str, missing: BTreeSet<String>) {
    assert!(
        missing.is_empty(),
        "docs/api.md does not mention these {what}: {missing:?}"
    );
}

/// `name` as code in the markdown.
fn mentions(doc: &str, name: &str) -> bool {
    doc.contains(&format!("`{name}`"))
}

#[test]
fn api_md_names_every_rpc_message_field_and_enum_value() {
    let doc = api_md();
    let fds = FileDescriptorSet::decode(ipa_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut missing = BTreeSet::new();
    let mut counted = 0;
    for file in fds.file.iter().filter(|f| f.package() == "ipa.v1") {
        for service in &file.service {
            for m in &service.method {
                counted += 1;
                if !mentions(&doc, m.name()) {
                    missing.insert(format!("rpc {}.{}", service.name(), m.name()));
                }
            }
        }
        for e in &file.enum_type {
            for v in &e.value {
                counted += 1;
                if !mentions(&doc, v.name()) {
                    missing.insert(format!("enum value {}", v.name()));
                }
            }
        }
        for m in &file.message_type {
            counted += 1;
            if !mentions(&doc, m.name()) {
                missing.insert(format!("message {}", m.name()));
            }
            for f in &m.field {
                counted += 1;
                if !mentions(&doc, f.name()) {
                    missing.insert(format!("field {}.{}", m.name(), f.name()));
                }
            }
        }
    }
    assert!(counted > 300, "the descriptor set looks empty ({counted})");
    assert_none_missing("proto names", missing);
}

#[test]
fn api_md_names_every_error_reason_and_event_type() {
    let doc = api_md();
    let reasons = ipa_proto::error::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|r| !mentions(&doc, r))
        .map(str::to_owned)
        .collect();
    assert_none_missing("error reasons", reasons);
    let events = EventType::ALL
        .iter()
        .map(|e| e.as_str())
        .filter(|e| !mentions(&doc, e))
        .map(str::to_owned)
        .collect();
    assert_none_missing("event types", events);
}

/// `--flag` and `IPA_*` words of a binary's `--help`.
fn flags_of(bin: &Path, args: &[&str]) -> BTreeSet<String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("run {} --help: {e}", bin.display()));
    assert!(out.status.success(), "{} --help failed", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = BTreeSet::new();
    for raw in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
        let flag = raw.starts_with("--")
            && raw.len() > 2
            && raw[2..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let env = raw.starts_with("IPA_") && raw.len() > 4;
        if (flag && raw != "--help" && raw != "--version") || env {
            words.insert(raw.to_owned());
        }
    }
    words
}

#[test]
fn api_md_names_every_flag_and_env_var_of_the_binaries() {
    let doc = api_md();
    let mut missing = BTreeSet::new();
    let mut seen = 0;
    let ipactl_commands: &[&[&str]] = &[
        &[],
        &["tasks", "create"],
        &["tasks", "list"],
        &["tasks", "events"],
        &["tasks", "wait"],
        &["tasks", "logs"],
        &["tasks", "stop"],
        &["tasks", "cancel"],
        &["events", "watch"],
        &["schedules", "create"],
        &["schedules", "list"],
        &["stats"],
    ];
    let none: &[&str] = &[];
    let mut runs: Vec<(PathBuf, &[&str])> = vec![
        (bin_path("central-manager"), none),
        (bin_path("pod-host"), none),
    ];
    runs.extend(ipactl_commands.iter().map(|a| (bin_path("ipactl"), *a)));
    for (bin, args) in runs {
        for word in flags_of(&bin, args) {
            seen += 1;
            if !doc.contains(&word) {
                missing.insert(format!("{} {}: {word}", bin.display(), args.join(" ")));
            }
        }
    }
    assert!(seen > 40, "found only {seen} flags");
    assert_none_missing("flags or environment variables", missing);
}

/// Relative link targets `](path)` of a markdown file.
fn links(md: &str) -> Vec<String> {
    md.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|t| t.split('#').next().unwrap_or_default().to_owned())
        .filter(|t| !t.is_empty() && !t.contains("://") && !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn the_docs_link_only_inside_the_repository() {
    let root = repo_root();
    let files = [
        "README.md",
        "docs/api.md",
        "docs/architecture.md",
        "docs/operations.md",
        "pod-host/README.md",
        "deploy/README.md",
        "deploy/replicas.md",
        "clients/python/README.md",
    ];
    for f in files {
        let path = root.join(f);
        let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {f}: {e}"));
        assert!(
            !md.contains("../shared"),
            "{f} points outside the repository"
        );
        for target in links(&md) {
            let resolved = path.parent().unwrap().join(&target);
            assert!(
                resolved.exists(),
                "{f} links to {target}, which does not exist"
            );
            let canonical = resolved.canonicalize().unwrap();
            assert!(
                canonical.starts_with(root.canonicalize().unwrap()),
                "{f} links outside the repository: {target}"
            );
        }
    }
}

#[test]
fn links_are_found() {
    assert_eq!(
        links("see [a](docs/api.md#errors) and [b](https://x.y/z) [c](../c.md)"),
        vec!["docs/api.md".to_owned(), "../c.md".to_owned()]
    );
}
