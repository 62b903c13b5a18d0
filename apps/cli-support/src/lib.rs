//! What `portunus-server`, `portunus-client` and `portunus-standalone` share on their command
//! lines: the `--version` text, `--log-format`, `completions SHELL`, the hidden `man --out-dir DIR` (both
//! generated from each binary's clap definition, the interface `cargo xtask dist` calls), and
//! the way a failure ends the process (`code: message` on stderr, the code's exit status).
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::Path;

use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap_complete::aot::{Bash, Fish, Zsh, generate};
use portunus_core::error::{ErrorCode, Failure};
use portunus_telemetry::log::LogFormat;

/// Shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// The `--version` text of a binary at `crate_version` (the binary's own
/// `CARGO_PKG_VERSION`), built on the first call and kept for the process: clap wants a
/// `'static` string.
pub fn version(crate_version: &str) -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| portunus_telemetry::version_text(crate_version))
}

/// `--log-format json|text`, with its values listed in `--help` and completions.
pub fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new(["json", "text"]).try_map(|text| text.parse::<LogFormat>())
}

/// `completions SHELL`: the script for `command` on stdout.
pub fn print_completions(mut command: clap::Command, shell: ShellArg) -> Result<(), Failure> {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    match shell {
        ShellArg::Bash => generate(Bash, &mut command, name, &mut script),
        ShellArg::Zsh => generate(Zsh, &mut command, name, &mut script),
        ShellArg::Fish => generate(Fish, &mut command, name, &mut script),
    }
    write_stdout(&script)
}

/// Writes `bytes` to stdout; a closed pipe is an I/O failure, not a panic.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(ErrorCode::IoError, format!("cannot write to stdout: {e}")))
}

/// `man --out-dir DIR`: `<bin>.1` and one `<bin>-<sub>.1` per visible subcommand (nested
/// ones too), created in `dir` (made if missing).
pub fn write_man_pages(command: clap::Command, dir: &Path) -> Result<(), Failure> {
    let io = |e: std::io::Error| {
        Failure::new(ErrorCode::IoError, format!("cannot write man pages to {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    clap_mangen::generate_to(command, dir).map_err(io)?;
    eprintln!("man pages written to {}", dir.display());
    Ok(())
}

/// Returns on success (exit 0); on failure prints `code: message` on stderr and exits with
/// the code's status.
pub fn finish(result: Result<(), Failure>) {
    if let Err(failure) = result {
        exit_with(&failure);
    }
}

/// Prints `code: message` on stderr and exits with the code's status.
pub fn exit_with(failure: &Failure) -> ! {
    eprintln!("{}: {}", failure.code, failure.message);
    std::process::exit(i32::from(failure.code.exit_status()));
}
