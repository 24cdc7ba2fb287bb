//! Pod templates: the named command lines a pod-host may run. API callers
//! choose a template by name, never a command line.
//!
//! ```toml
//! [templates.default]
//! command = "/usr/local/bin/demo-pod"   # absolute, or looked up on PATH
//! args = ["--verbose"]                  # optional
//! env = { RUST_LOG = "info" }           # optional, added to the pod's env
//! cwd = "/srv/work"                     # optional; default: the pod's own dir
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Name of the template used when a request names none.
pub const DEFAULT_TEMPLATE: &str = "default";

/// Longest template name central-manager accepts.
pub const MAX_TEMPLATE_CHARS: usize = 64;

/// Why `name` cannot be a template name, if it cannot: central-manager
/// accepts 1-64 characters of letters, digits, '_', '.' and '-' in a
/// task's `template`, so a template named otherwise could never be used.
pub fn template_name_problem(name: &str) -> Option<String> {
    let n = name.chars().count();
    if n == 0 || n > MAX_TEMPLATE_CHARS {
        return Some(format!(
            "template name {name:?} is {n} characters long; central-manager accepts 1-{MAX_TEMPLATE_CHARS}"
        ));
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .map(|c| {
            format!(
                "template name {name:?} contains {c:?}; central-manager accepts only letters, digits, '_', '.' and '-'"
            )
        })
}

/// One template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Program to run (no shell is involved).
    pub command: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment; the pod contract variables are set after these
    /// and cannot be overridden.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` runs the pod in its own data dir.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

/// All templates by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Templates {
    by_name: BTreeMap<String, Template>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    templates: BTreeMap<String, Template>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Templates {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| TemplateError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.templates.is_empty() {
            return Err("no [templates.NAME] section".to_owned());
        }
        for (name, t) in &file.templates {
            if let Some(problem) = template_name_problem(name) {
                return Err(problem);
            }
            if t.command.as_os_str().is_empty() {
                return Err(format!("templates.{name}.command is empty"));
            }
            if let Some(cwd) = &t.cwd
                && !cwd.is_absolute()
            {
                return Err(format!(
                    "templates.{name}.cwd {:?} is not an absolute path",
                    cwd.display().to_string()
                ));
            }
            if let Some(k) = t.env.keys().find(|k| k.is_empty() || k.contains('=')) {
                return Err(format!("templates.{name}.env has an invalid name {k:?}"));
            }
        }
        Ok(Self {
            by_name: file.templates,
        })
    }

    /// The built-in config: template `default` runs `demo-pod` from `bin_dir`.
    pub fn demo_default(bin_dir: &Path) -> Self {
        let mut by_name = BTreeMap::new();
        by_name.insert(
            DEFAULT_TEMPLATE.to_owned(),
            Template {
                command: bin_dir.join("demo-pod"),
                args: vec![],
                env: BTreeMap::new(),
                cwd: None,
            },
        );
        Self { by_name }
    }

    /// What is wrong on this machine with templates that are well formed:
    /// a working directory or an absolute program that does not exist (yet).
    /// Not fatal (a volume may be mounted later); each start reports it
    /// again, naming what failed.
    pub fn check_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, t) in &self.by_name {
            if let Some(cwd) = &t.cwd
                && !cwd.is_dir()
            {
                out.push(format!(
                    "template {name:?}: working directory {} does not exist (or is not a directory); its pods cannot start",
                    cwd.display()
                ));
            }
            if t.command.is_absolute() && !t.command.is_file() {
                out.push(format!(
                    "template {name:?}: program {} does not exist; its pods cannot start",
                    t.command.display()
                ));
            }
        }
        out
    }

    pub fn get(&self, name: &str) -> Option<&Template> {
        self.by_name.get(name)
    }

    /// Template names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_minimal_templates() {
        let t = Templates::parse(
            r#"
            [templates.default]
            command = "/bin/sh"
            args = ["-c", "echo hi"]
            env = { A = "1", B = "two" }
            cwd = "/tmp"

            [templates.minimal]
            command = "sleep"
            "#,
        )
        .unwrap();
        assert_eq!(t.names(), vec!["default", "minimal"]);
        let d = t.get("default").unwrap();
        assert_eq!(d.command, PathBuf::from("/bin/sh"));
        assert_eq!(d.args, vec!["-c", "echo hi"]);
        assert_eq!(d.env.get("B").map(String::as_str), Some("two"));
        assert_eq!(d.cwd, Some(PathBuf::from("/tmp")));
        let m = t.get("minimal").unwrap();
        assert!(m.args.is_empty() && m.env.is_empty() && m.cwd.is_none());
        assert!(t.get("nope").is_none());
    }

    #[test]
    fn rejects_bad_configs_with_a_reason() {
        for (text, needle) in [
            ("", "no [templates"),
            ("[templates.x]\nargs = []", "command"),
            ("[templates.x]\ncommand = \"\"", "command is empty"),
            (
                "[templates.x]\ncommand = \"a\"\nshell = true",
                "unknown field",
            ),
            ("[other]\nx = 1", "unknown field"),
            (
                "[templates.x]\ncommand = \"a\"\nenv = { \"A=B\" = \"1\" }",
                "env",
            ),
            ("[templates.x]\ncommand = 5", "invalid type"),
            (
                "[templates.\"a b\"]\ncommand = \"a\"",
                "template name \"a b\" contains ' '",
            ),
            ("[templates.\"\"]\ncommand = \"a\"", "is 0 characters long"),
            ("[templates.\"ü\"]\ncommand = \"a\"", "contains 'ü'"),
            (
                "[templates.x]\ncommand = \"a\"\ncwd = \"rel/dir\"",
                "cwd \"rel/dir\" is not an absolute path",
            ),
        ] {
            let err = Templates::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    /// Exactly the names central-manager's TemplateName accepts.
    #[test]
    fn names_follow_central_rules() {
        for ok in [
            "default",
            "a",
            "py-3.12_fast",
            &"t".repeat(MAX_TEMPLATE_CHARS),
        ] {
            assert_eq!(template_name_problem(ok), None, "{ok:?}");
        }
        for bad in [
            "",
            "has space",
            "a/b",
            "../etc",
            "ü",
            &"t".repeat(MAX_TEMPLATE_CHARS + 1),
        ] {
            assert!(template_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn missing_paths_are_reported_not_fatal() {
        let t = Templates::parse(
            "[templates.a]\ncommand = \"/nonexistent/prog\"\ncwd = \"/nonexistent/dir\"\n\n[templates.b]\ncommand = \"sh\"\ncwd = \"/tmp\"\n",
        )
        .unwrap();
        let w = t.check_paths();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("working directory /nonexistent/dir does not exist"),
            "{w:?}"
        );
        assert!(
            w[1].contains("program /nonexistent/prog does not exist"),
            "{w:?}"
        );
    }

    #[test]
    fn default_runs_demo_pod_next_to_the_binary() {
        let t = Templates::demo_default(Path::new("/opt/ipa/bin"));
        assert_eq!(t.names(), vec![DEFAULT_TEMPLATE]);
        assert_eq!(
            t.get(DEFAULT_TEMPLATE).unwrap().command,
            PathBuf::from("/opt/ipa/bin/demo-pod")
        );
    }

    #[test]
    fn load_reports_missing_file() {
        let err = Templates::load(Path::new("/nonexistent/pod-host.toml")).unwrap_err();
        assert!(matches!(err, TemplateError::Read { .. }));
    }
}
