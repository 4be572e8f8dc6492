//! `luahost module check FILE.so` (being written: see issue 2).

use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path) -> ExitCode {
    eprintln!(
        "luahost: module check is not available yet ({})",
        file.display()
    );
    ExitCode::from(2)
}
