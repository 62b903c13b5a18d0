//! The rule grammar and the JSON rule body: never panic; a validated rule renders to a spec
//! that validates to the same rule.
#![no_main]
use portunus_core::rule::{RuleLimits, RuleSpec, parse_listen, parse_target};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_listen(text);
    let _ = parse_target(text);
    if let Ok(spec) = serde_json::from_str::<RuleSpec>(text) {
        if let Ok(def) = spec.validate(RuleLimits::default()) {
            let again = def.to_spec().validate(RuleLimits::default()).expect("a rendered rule validates");
            assert_eq!(again, def);
        }
    }
});
