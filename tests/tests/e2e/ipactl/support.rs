//! A whole single-machine system (central-manager with `--local-pod-host`,
//! as the README starts it) and the ipactl pointed at it.

use std::ffi::OsString;

use ipa_tests::ipactl::Ipactl;
use ipa_tests::{DEADLINE, ServerProcess, wait_for_async};

pub struct System {
    /// Kept for its lifetime: dropping it stops the servers.
    _central: ServerProcess,
    pub ipactl: Ipactl,
}

impl System {
    /// central-manager on port 0 in a temp dir with its local pod-host,
    /// once that pod-host is ready (seen through `ipactl hosts list`).
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// [`System::start`] with `envs` for central-manager and its local
    /// pod-host (which inherits them, e.g. `IPA_CAPACITY`).
    pub async fn start_with_env(envs: &[(&str, &str)]) -> Self {
        let args: Vec<OsString> = ["--listen", "127.0.0.1:0", "--local-pod-host"]
            .iter()
            .map(OsString::from)
            .collect();
        let central = ServerProcess::start("central-manager", &args, envs, None).await;
        let ipactl = Ipactl::new(central.addr);
        wait_for_async("the local pod-host to be ready", DEADLINE, || async {
            let run = ipactl.run(&["hosts", "list", "-o", "json"]).await;
            let hosts = json(run.ok());
            (hosts["hosts"][0]["state"] == "POD_HOST_STATE_READY").then_some(())
        })
        .await;
        Self {
            _central: central,
            ipactl,
        }
    }

    /// Creates a demo task (`demo.step_ms` per phase), started or not, and
    /// returns its id as `tasks create -q` prints it.
    pub async fn create(&self, title: &str, step_ms: u32, start: bool) -> String {
        let step = format!("demo.step_ms={step_ms}");
        let mut args = vec!["tasks", "create", title, "-q", "-m", &step];
        if start {
            args.push("--start");
        }
        let run = self.ipactl.run(&args).await;
        let out = run.ok();
        let id = out.trim_end_matches('\n');
        assert!(
            uuid::Uuid::parse_str(id).is_ok() && out.ends_with('\n') && !id.contains('\n'),
            "-q prints the id alone: {out:?}"
        );
        id.to_owned()
    }
}

/// Parses JSON output, with the text in the panic message.
#[track_caller]
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Parses YAML output, with the text in the panic message.
#[track_caller]
pub fn yaml(text: &str) -> serde_json::Value {
    yaml_serde::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}
