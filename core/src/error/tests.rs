use super::*;
use std::collections::HashSet;

#[test]
fn codes_are_unique_and_round_trip() {
    let mut seen = HashSet::new();
    for code in ErrorCode::ALL {
        assert!(seen.insert(code.as_str()), "duplicate code string {}", code.as_str());
        assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
    }
}

#[test]
fn exit_statuses_follow_the_documented_families() {
    for code in ErrorCode::ALL {
        let exit = code.exit_status();
        assert!([1, 2, 3, 4, 5, 6, 7, 8, 65, 75, 78].contains(&exit), "{code} has undocumented exit {exit}");
    }
    assert_eq!(ErrorCode::PortInUse.exit_status(), 5);
    assert_eq!(ErrorCode::ClientNotConnected.exit_status(), 4);
    assert_eq!(ErrorCode::AckTimeout.exit_status(), 7);
    assert_eq!(ErrorCode::StoreInUse.exit_status(), 75);
    assert_eq!(ErrorCode::SchemaVersionTooNew.exit_status(), 78);
    assert_eq!(ErrorCode::StoreDamaged.exit_status(), 65);
}

#[test]
fn code_strings_are_snake_case_or_dotted() {
    for code in ErrorCode::ALL {
        assert!(code.as_str().chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'), "{code}");
    }
}

#[test]
fn store_damaged_has_an_exit_status_no_other_code_uses() {
    let exit = ErrorCode::StoreDamaged.exit_status();
    let sharing: Vec<_> = ErrorCode::ALL.iter().filter(|c| c.exit_status() == exit).collect();
    assert_eq!(sharing, [&ErrorCode::StoreDamaged]);
}
