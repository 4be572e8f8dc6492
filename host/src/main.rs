//! `luahost`: a Lua-scriptable proxy that runs HAProxy Lua scripts, a stock-lua
//! compatible script runner, and a checker for native Lua modules.

mod backend;
mod checks;
mod cli;
#[allow(dead_code)]
mod config;
#[cfg(test)]
mod fuzz;
mod headers;
mod httpclient;
mod log;
mod lua;
mod module_check;
mod name_hash;
mod proxy;
mod run_script;
mod sample;
mod stats;
mod stream_addr;
mod tls;
mod txn;

use clap::{Parser, Subcommand};

/// mimalloc serves the many small, short-lived allocations of the request
/// path (Lua objects go through Rust's allocator via mlua) faster than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "luahost",
    about = "A Lua-scriptable proxy that runs HAProxy Lua scripts, built in Rust",
    override_usage = "luahost -f FILE [-f FILE ...] [-c] [-d] [-D] [-W] [-p PIDFILE]\n       luahost run SCRIPT [ARGS...]\n       luahost module check FILE.so",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file (HAProxy syntax); may be given several times.
    #[arg(short = 'f', value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Check the configuration (and load its Lua files), then exit 0 or 1.
    #[arg(short = 'c')]
    check: bool,
    /// Foreground with debug logging and an access log line per request.
    #[arg(short = 'd')]
    debug: bool,
    /// Detach into the background once listening (as `daemon`).
    #[arg(short = 'D')]
    daemon: bool,
    /// Master-worker mode: a master process supervises one worker process
    /// and reloads it on SIGUSR2 (as `master-worker`).
    #[arg(short = 'W')]
    master_worker: bool,
    /// Write the process id to this file.
    #[arg(short = 'p', value_name = "PIDFILE")]
    pidfile: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Lua script as the stock `lua` interpreter does: luahost run FILE [ARGS...]
    Run {
        /// The script ("-" reads standard input).
        script: PathBuf,
        /// Arguments passed to the script as `arg[1..]` and `...`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Native Lua module tools.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Check that a native module (.so) will load: entry points, require
    /// names, embedded Lua copies, unresolved symbols.
    Check {
        /// The module file.
        file: PathBuf,
    },
}

/// "luahost 0.1.0 (Lua 5.4.9)".
fn version_line() -> String {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        luahost_ffi::lua_release()
    )
}

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas (`madvise(MADV_HUGEPAGE)`), and every first touch of a
/// 2 MB region then zeroes it whole in the page fault: with 300,000 backends
/// that was 5 s of system time out of 6.5 s of start-up (docs/benchmarks.md,
/// `startup`), against 0.2-0.6 s with ordinary pages. The kernel checks the
/// flag at fault time, so arenas mapped before `main` are covered too.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but the process's THP flag; failure (old kernel) is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    // The Lua library must be linked in even in code paths that only use it
    // through mlua: native modules resolve lua_* against this executable.
    luahost_ffi::link();
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().version(version_line()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Some(Command::Run { script, args }) => run_script::run(&script, &args),
        Some(Command::Module {
            command: ModuleCommand::Check { file },
        }) => module_check::run(&file),
        None if !cli.files.is_empty() => proxy::run(proxy::Options {
            files: cli.files,
            check_only: cli.check,
            debug: cli.debug,
            pidfile: cli.pidfile,
            daemon: cli.daemon,
            master_worker: cli.master_worker,
        }),
        None => {
            let _ = Cli::command().print_help();
            ExitCode::from(1)
        }
    }
}
