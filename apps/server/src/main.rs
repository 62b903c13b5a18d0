//! `portunus-server`: parses the command line and dispatches. `serve` wires the adapters to
//! core (see `serve.rs`); `reset-password`, `bootstrap-superadmin` and `restore` open the store
//! directly (`offline.rs`); `completions` and `man` print what clap knows of the command line;
//! every other subcommand is an operator command that calls the server's HTTP API
//! (`operator.rs`). Failures end with the exit status of their code, printed once on stderr as
//! `code: message`.
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

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use portunus_cli_support::{exit_with, finish, print_completions, write_man_pages};
use portunus_core::error::{ErrorCode, Failure};

fn main() {
    let arenas_capped = alloc::cap_arenas();
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // `--server` comes from the command line here, not from PORTUNUS_SERVER: a variable set for
    // the operator commands must not stop `serve`.
    let server_flag = matches.value_source("server") == Some(ValueSource::CommandLine);
    if let (true, Some(name)) = (server_flag, cli.command.works_offline()) {
        exit_with(&Failure::new(
            ErrorCode::InvalidRequest,
            format!("--server is for commands that call a running server; `{name}` does not (drop --server)"),
        ));
    }
    match &cli.command {
        cli::Command::Completions { shell } => return finish(print_completions(cli::Cli::command(), *shell)),
        cli::Command::Man { out_dir } => return finish(write_man_pages(cli::Cli::command(), out_dir)),
        _ => {}
    }
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
        Err(err) => exit_with(&Failure::new(ErrorCode::Internal, format!("tokio runtime: {err}"))),
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
    finish(result)
}

/// The log filter: `PORTUNUS_LOG`, else `RUST_LOG`.
fn log_directive() -> Option<String> {
    ["PORTUNUS_LOG", "RUST_LOG"].into_iter().find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
}
