//! Unit tests of the bind-address choice, with a fake socket layer.

use std::cell::RefCell;

use nix::errno::Errno;

use super::*;

/// Records every address tried; `[::]` fails with `v6_error` when given.
fn fake(
    tried: &RefCell<Vec<(SocketAddr, bool)>>,
    v6_error: Option<Errno>,
) -> impl Fn(SocketAddr, bool) -> io::Result<()> + '_ {
    move |addr, dual_stack| {
        tried.borrow_mut().push((addr, dual_stack));
        match v6_error {
            Some(errno) if addr.is_ipv6() => Err(errno.into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn default_address_is_dual_stack_any() {
    let family = Family::default();
    let tried = RefCell::new(Vec::new());
    family.bind_with(None, 8080, fake(&tried, None)).unwrap();
    assert_eq!(*tried.borrow(), vec![("[::]:8080".parse().unwrap(), true)]);
}

#[test]
fn without_ipv6_the_plane_falls_back_to_ipv4_and_remembers() {
    let family = Family::default();
    let tried = RefCell::new(Vec::new());
    family.bind_with(None, 8080, fake(&tried, Some(Errno::EAFNOSUPPORT))).unwrap();
    family.bind_with(None, 8081, fake(&tried, Some(Errno::EAFNOSUPPORT))).unwrap();
    let expected: Vec<(SocketAddr, bool)> = vec![
        ("[::]:8080".parse().unwrap(), true),
        ("0.0.0.0:8080".parse().unwrap(), false),
        ("0.0.0.0:8081".parse().unwrap(), false),
    ];
    assert_eq!(*tried.borrow(), expected);
}

#[test]
fn other_ipv6_errors_are_reported_not_hidden_by_a_fallback() {
    let family = Family::default();
    let tried = RefCell::new(Vec::new());
    let err = family.bind_with(None, 8080, fake(&tried, Some(Errno::EADDRINUSE))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(tried.borrow().len(), 1);
}

#[test]
fn an_explicit_address_is_used_as_given() {
    let family = Family::default();
    let tried = RefCell::new(Vec::new());
    family.bind_with(Some("127.0.0.1".parse().unwrap()), 9000, fake(&tried, None)).unwrap();
    assert_eq!(*tried.borrow(), vec![("127.0.0.1:9000".parse().unwrap(), false)]);
}

#[test]
fn bind_failures_carry_the_stable_code_and_name_the_port() {
    let in_use = bind_failure(18080, &io::Error::from(Errno::EADDRINUSE));
    assert_eq!((in_use.code, in_use.message.as_str()), (ErrorCode::PortInUse, "port 18080 already in use"));
    let denied = bind_failure(80, &io::Error::from(Errno::EACCES));
    assert_eq!(denied.code, ErrorCode::IoError);
    assert!(denied.message.contains("80"));
}
