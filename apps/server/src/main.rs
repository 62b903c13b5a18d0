//! `portunus-server`: parses the command line and dispatches. `serve` wires the adapters to
//! core (see `serve.rs`); `reset-password` and `bootstrap-superadmin` open the store directly
//! (`offline.rs`); every other subcommand is an operator command that calls the server's HTTP
//! API (`operator.rs`). Failures end with the exit status of their code.
//!
//! The one `unsafe` call is glibc's `mallopt`, in `alloc::cap_arenas`.
#![deny(unsafe_code)]

mod alloc;
mod cli;
mod datadir;
mod offline;
mod operator;
mod os;
mod serve;

use clap::Parser;
use portunus_core::error::Failure;

fn main() {
    let arenas_capped = alloc::cap_arenas();
    let cli = cli::Cli::parse();
    portunus_telemetry::log::init(cli.log_format, log_directive().as_deref());
    tracing::debug!(arenas_capped, "allocator arenas");
    portunus_control::install_default_provider();
    let blocking_threads = portunus_core::config::ControlPolicy::default().blocking_threads;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            exit_with(&Failure::new(portunus_core::ErrorCode::Internal, format!("tokio runtime: {err}")))
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(&cli.data_dir, args).await,
            cli::Command::ResetPassword { user, temporary: _, keep_api_tokens } => {
                offline::reset_password(&cli.data_dir, &user, keep_api_tokens)
            }
            cli::Command::BootstrapSuperadmin => offline::bootstrap_superadmin(&cli.data_dir),
            cli::Command::Restore { input, force } => offline::restore(&cli.data_dir, &input, force),
            other => operator::run(&cli.data_dir, cli.server.as_deref(), other).await,
        }
    });
    if let Err(failure) = result {
        exit_with(&failure);
    }
}

/// Prints `code: message` to stderr and exits with the code's status.
fn exit_with(failure: &Failure) -> ! {
    eprintln!("{}: {}", failure.code, failure.message);
    std::process::exit(i32::from(failure.code.exit_status()));
}

/// The log filter: `PORTUNUS_LOG`, else `RUST_LOG`.
fn log_directive() -> Option<String> {
    ["PORTUNUS_LOG", "RUST_LOG"].into_iter().find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
}
