//! The pod-host's template config (TOML): never a panic, and every config
//! it accepts is one central-manager can use: template names central
//! accepts, non-empty commands, absolute working directories, environment
//! names a process can have.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_host::templates::{Templates, template_name_problem};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(templates) = Templates::parse(text) else {
        return;
    };
    let names = templates.names();
    assert!(!names.is_empty());
    for name in names {
        assert_eq!(template_name_problem(&name), None, "{name:?}");
        let t = templates.get(&name).expect("listed template");
        assert!(!t.command.as_os_str().is_empty());
        if let Some(cwd) = &t.cwd {
            assert!(cwd.is_absolute(), "{cwd:?}");
        }
        for k in t.env.keys() {
            assert!(!k.is_empty() && !k.contains('='), "{k:?}");
        }
    }
});
