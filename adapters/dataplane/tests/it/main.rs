//! Integration tests of the data plane (TCP and UDP) over real loopback sockets.

/// Declares each test once per copy path (`splice_path::name`, `userspace_path::name`); the
/// test is an `async fn name(path: support::Path)` beside the call.
macro_rules! on_both_paths {
    ($($name:ident),+ $(,)?) => {
        mod splice_path {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Path::Splice).await
                }
            )+
        }
        mod userspace_path {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Path::Userspace).await
                }
            )+
        }
    };
}

mod binding;
mod example;
mod lifecycle;
mod paths;
mod rate_limit;
mod resets;
mod rule_targets;
mod sni;
mod support;
mod targets;
mod udp;
