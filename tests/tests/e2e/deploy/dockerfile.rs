//! The container image: deploy/docker/Dockerfile is never built on these
//! machines (no container engine), so its promises are checked here: the
//! build step is the cargo command CI runs, the runtime stage has no build
//! tools, runs as a numeric non-root user, stops on SIGTERM, and installs
//! the three binaries where the manifests' `command:` and the pod template
//! config expect them.

use std::path::Path;

use super::manifests::{CENTRAL, POD_HOST, Rendered, pod_spec, repo_root, strings};

/// The directory the image installs the binaries into.
const BIN_DIR: &str = "/usr/local/bin";
const BINARIES: [&str; 3] = ["central-manager", "pod-host", "demo-pod"];

/// One build stage: its `FROM` line and its instructions (comments dropped,
/// continuation lines joined).
struct Stage {
    from: String,
    instructions: Vec<String>,
}

fn stages(dockerfile: &str) -> Vec<Stage> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            joined.push(std::mem::take(&mut cur));
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for ins in joined {
        if ins.to_uppercase().starts_with("FROM ") {
            out.push(Stage {
                from: ins,
                instructions: Vec::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.instructions.push(ins);
        }
    }
    out
}

fn instr<'a>(stage: &'a Stage, keyword: &str) -> Vec<&'a str> {
    let kw = format!("{keyword} ");
    stage
        .instructions
        .iter()
        .filter(|i| i.to_uppercase().starts_with(&kw))
        .map(|i| i[kw.len()..].trim())
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn image_builds_with_cis_cargo_command_and_runs_non_root_without_build_tools() {
    let root = repo_root();
    let dockerfile = read(&root.join("deploy/docker/Dockerfile"));
    let st = stages(&dockerfile);
    assert!(st.len() >= 2, "multi-stage build expected");
    let (builders, runtime) = st.split_at(st.len() - 1);
    let runtime = &runtime[0];

    // The build step is CI's cargo command (scripts/test) in release mode.
    let ci = read(&root.join("scripts/test"));
    let ci_build = "cargo build --workspace --bins --locked";
    assert!(
        ci.contains(ci_build),
        "scripts/test no longer runs `{ci_build}`"
    );
    let builds: Vec<&str> = builders
        .iter()
        .flat_map(|s| instr(s, "RUN"))
        .filter(|r| r.contains("cargo "))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "one cargo step in the build stages: {builds:?}"
    );
    assert!(
        builds[0].contains(&format!("{ci_build} --release")),
        "the image must build with CI's command plus --release: {}",
        builds[0]
    );

    // Runtime: a slim base, no toolchain, the binaries and nothing else.
    let from = runtime.from.to_lowercase();
    assert!(
        !from.contains("rust"),
        "runtime stage is a Rust image: {from}"
    );
    for run in instr(runtime, "RUN") {
        for tool in [
            "cargo",
            "rustc",
            "rustup",
            "gcc",
            "g++",
            "clang",
            "build-essential",
            "make ",
        ] {
            assert!(
                !run.contains(tool),
                "runtime stage installs build tool {tool}: {run}"
            );
        }
    }
    let copies = instr(runtime, "COPY").join("\n");
    for bin in BINARIES {
        assert!(
            copies.contains(&format!("/{bin}")),
            "runtime stage does not copy {bin}"
        );
    }
    assert!(
        copies.contains(&format!("{BIN_DIR}/")),
        "binaries not installed in {BIN_DIR}"
    );

    let user = instr(runtime, "USER");
    assert_eq!(user.len(), 1, "one USER in the runtime stage");
    let uid: u64 = user[0]
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("USER must be numeric (runAsNonRoot checks it): {}", user[0]));
    assert!(uid > 0, "USER is root");
    assert_eq!(
        instr(runtime, "STOPSIGNAL"),
        vec!["SIGTERM"],
        "STOPSIGNAL SIGTERM"
    );

    let ignore = read(&root.join("deploy/docker/Dockerfile.dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "build context would include target/"
    );

    // The manifests run the image's binaries as the image's user (a
    // pod-host that runs pods as users of their own is root instead; the
    // deployment rules check what it may do).
    for r in Rendered::all() {
        for name in [CENTRAL, POD_HOST] {
            let sts = if name == CENTRAL {
                r.central()
            } else {
                r.get("StatefulSet", name)
            };
            let spec = pod_spec(sts);
            let pods_apart = spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    super::manifests::setting(c, "pod-uid-range").is_some()
                        || super::manifests::setting(c, "pod-user").is_some()
                });
            assert_eq!(
                spec["securityContext"]["runAsUser"].as_u64(),
                Some(if pods_apart { 0 } else { uid }),
                "{}: {name} uid",
                r.name
            );
            for c in spec["containers"].as_array().expect("containers") {
                let cmd = strings(&c["command"]);
                let bin = cmd
                    .first()
                    .unwrap_or_else(|| panic!("{}: {name} has no command", r.name));
                let file = bin.strip_prefix(&format!("{BIN_DIR}/")).unwrap_or_default();
                assert!(
                    BINARIES.contains(&file),
                    "{}: {name} runs {bin}, not an image binary",
                    r.name
                );
            }
        }
        // Pod templates that name an absolute path under the image's bin
        // dir must name a binary that is there.
        for cm in r.of_kind("ConfigMap") {
            for (_, text) in cm["data"].as_object().into_iter().flatten() {
                for word in text.as_str().unwrap_or_default().split('"') {
                    if let Some(f) = word.strip_prefix(&format!("{BIN_DIR}/")) {
                        assert!(
                            BINARIES.contains(&f),
                            "{}: template runs {word}, not in the image",
                            r.name
                        );
                    }
                }
            }
        }
    }
}
