//! Properties of the domain types (proptest): each `parse` accepts exactly
//! the values its documented limits allow, keeps what it accepts, and
//! round-trips; pages never pass their budget; and the size hints behind
//! the 4 MiB pages never undercount the real encoding.

use std::collections::HashMap;

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;

use super::fields::{
    MAX_DESCRIPTION_CHARS, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS,
    MAX_TEMPLATE_CHARS, MAX_TITLE_CHARS,
};
use super::limits::{
    MAX_BACKOFF_MS, MAX_METADATA_BYTES, MAX_RESTARTS, MAX_WINDOW_SECONDS, WireSize, fill_page,
};
use super::*;

/// Text mixing ASCII, whitespace, 2-, 3- and 4-byte characters, up to `max`
/// characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just(' '),
            Just('\t'),
            Just('é'),
            Just('€'),
            Just('😀'),
            any::<char>(),
        ],
        0..=max,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn title_accepts_exactly_trimmed_non_empty_up_to_the_limit(s in text(MAX_TITLE_CHARS + 8)) {
        let t = s.trim();
        let ok = !t.is_empty() && t.chars().count() <= MAX_TITLE_CHARS;
        match Title::parse(&s) {
            Ok(title) => {
                prop_assert!(ok);
                prop_assert_eq!(title.as_str(), t);
                prop_assert_eq!(Title::parse(title.as_str()).unwrap(), title);
            }
            Err(e) => {
                prop_assert!(!ok);
                prop_assert!(matches!(e, crate::error::Error::InvalidTitle(_)));
            }
        }
    }

    #[test]
    fn description_is_kept_as_given_up_to_the_limit(n in 0..MAX_DESCRIPTION_CHARS + 20, c in any::<char>()) {
        let s: String = std::iter::repeat_n(c, n).collect();
        match Description::parse(&s) {
            Ok(d) => {
                prop_assert!(n <= MAX_DESCRIPTION_CHARS);
                prop_assert_eq!(d.as_str(), s.as_str());
            }
            Err(_) => prop_assert!(n > MAX_DESCRIPTION_CHARS),
        }
    }

    #[test]
    fn metadata_accepts_exactly_what_every_limit_allows(
        map in hash_map(text(MAX_METADATA_KEY_CHARS + 4), text(40), 0..MAX_METADATA_ENTRIES + 4),
        big in 0usize..3,
    ) {
        // Some maps get one huge value, to cross the 64 KiB total.
        let mut map: HashMap<String, String> = map;
        if big > 0 && !map.is_empty() {
            let k = map.keys().next().cloned().unwrap();
            map.insert(k, "v".repeat(MAX_METADATA_VALUE_CHARS - 1 + big));
        }
        let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        let ok = map.len() <= MAX_METADATA_ENTRIES
            && bytes <= MAX_METADATA_BYTES
            && map.iter().all(|(k, v)| {
                let kn = k.chars().count();
                (1..=MAX_METADATA_KEY_CHARS).contains(&kn) && v.chars().count() <= MAX_METADATA_VALUE_CHARS
            });
        match Metadata::parse(map.clone()) {
            Ok(m) => {
                prop_assert!(ok);
                let back: HashMap<String, String> = m.entries().clone().into_iter().collect();
                prop_assert_eq!(back, map);
            }
            Err(e) => {
                prop_assert!(!ok, "refused a valid map: {}", e);
                let is_metadata = matches!(e, crate::error::Error::InvalidArgument { field: "metadata", .. });
                prop_assert!(is_metadata);
            }
        }
    }

    #[test]
    fn metadata_total_bytes_is_the_limit_whatever_the_split(entries in 16usize..=64, extra in 0usize..2) {
        // `entries` entries sharing exactly MAX_METADATA_BYTES (+ extra).
        let per = MAX_METADATA_BYTES / entries;
        let mut map = HashMap::new();
        for i in 0..entries {
            let k = format!("k{i:03}");
            let len = if i == 0 { MAX_METADATA_BYTES - per * (entries - 1) } else { per };
            map.insert(k.clone(), "v".repeat(len - k.len()));
        }
        if extra > 0 {
            map.get_mut("k000").unwrap().push('v');
        }
        prop_assert!(map.values().all(|v| v.len() <= MAX_METADATA_VALUE_CHARS));
        prop_assert_eq!(Metadata::parse(map).is_ok(), extra == 0);
    }

    #[test]
    fn template_names_are_default_or_the_safe_alphabet(s in "[A-Za-z0-9_.\\- /ü]{0,70}") {
        let ok_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        let ok = s.is_empty() || (ok_chars && s.chars().count() <= MAX_TEMPLATE_CHARS);
        match TemplateName::parse(&s) {
            Ok(t) if s.is_empty() => prop_assert_eq!(t.as_str(), "default"),
            Ok(t) => {
                prop_assert!(ok);
                prop_assert_eq!(t.as_str(), s.as_str());
            }
            Err(_) => prop_assert!(!ok),
        }
    }

    #[test]
    fn task_ids_round_trip_and_junk_is_refused(bits in any::<u128>(), junk in "[0-9a-zA-Z{}-]{0,40}") {
        let id = uuid::Uuid::from_u128(bits).hyphenated().to_string();
        let parsed = TaskId::parse(&id, "task_id").unwrap();
        prop_assert_eq!(parsed.to_string(), id.clone());
        prop_assert_eq!(TaskId::parse(&id.to_uppercase(), "task_id").unwrap(), parsed);
        if uuid::Uuid::try_parse(&junk).is_err() || junk.len() != 36 {
            prop_assert!(TaskId::parse(&junk, "task_id").is_err());
        }
    }

    #[test]
    fn restart_policy_caps_and_defaults(
        auto in proptest::option::of(any::<bool>()),
        max in proptest::option::of(0u32..2000),
        window in proptest::option::of(0u32..1_000_000),
        initial in proptest::option::of(0u32..5_000_000),
        backoff in proptest::option::of(0u32..5_000_000),
    ) {
        let spec = RestartPolicySpec {
            auto_restart: auto,
            max_restarts: max,
            window_seconds: window,
            initial_backoff_ms: initial,
            max_backoff_ms: backoff,
        };
        let within = max.is_none_or(|v| v <= MAX_RESTARTS)
            && window.is_none_or(|v| v <= MAX_WINDOW_SECONDS)
            && initial.is_none_or(|v| v <= MAX_BACKOFF_MS)
            && backoff.is_none_or(|v| v <= MAX_BACKOFF_MS);
        prop_assert_eq!(spec.validate().is_ok(), within);
        let d = RestartDefaults {
            auto_restart: false,
            max_restarts: 3,
            window_seconds: 60,
            initial_backoff_ms: 1000,
            max_backoff_ms: 30_000,
        };
        let p = spec.resolve(&d);
        prop_assert_eq!(p.auto_restart, auto.unwrap_or(d.auto_restart));
        prop_assert_eq!(p.max_restarts, max.unwrap_or(d.max_restarts));
        prop_assert_eq!(p.window_seconds, window.unwrap_or(d.window_seconds));
        prop_assert_eq!(p.initial_backoff_ms, initial.unwrap_or(d.initial_backoff_ms));
        prop_assert_eq!(p.max_backoff_ms, backoff.unwrap_or(d.max_backoff_ms));
    }

    #[test]
    fn page_limits(limit in any::<u32>()) {
        match page_limit(limit, "limit") {
            Ok(n) if limit == 0 => prop_assert_eq!(n, 100),
            Ok(n) => prop_assert_eq!(n, limit),
            Err(_) => prop_assert!(limit > 1000),
        }
    }

    #[test]
    fn pages_are_a_prefix_within_the_budget(sizes in vec(1usize..5000, 0..200), budget in 1usize..100_000) {
        struct S(usize);
        impl WireSize for S {
            fn wire_size_hint(&self) -> usize { self.0 }
        }
        let page = fill_page::<_, ()>(sizes.iter().map(|s| Ok(S(*s))), budget).unwrap();
        let n = page.items.len();
        prop_assert_eq!(page.truncated, n < sizes.len());
        let used: usize = sizes[..n].iter().sum();
        // Within the budget, unless a single record is bigger than it.
        prop_assert!(used <= budget || n == 1);
        // Never cut while the next one would have fitted.
        if page.truncated && n > 0 {
            prop_assert!(used + sizes[n] > budget);
        }
        prop_assert!(n > 0 || sizes.is_empty());
    }
}
