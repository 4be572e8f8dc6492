//! `luahost`: a Lua-scriptable proxy that runs HAProxy Lua scripts, a stock-lua
//! compatible script runner, and a checker for native Lua modules.

mod module_check;
mod run_script;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "luahost",
    about = "A Lua-scriptable proxy that runs HAProxy Lua scripts, built in Rust",
    args_conflicts_with_subcommands = true
)]
struct Cli {
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

fn main() -> ExitCode {
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
        None => {
            let _ = Cli::command().print_help();
            ExitCode::from(1)
        }
    }
}
