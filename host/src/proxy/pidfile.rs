//! The `-p` / `pidfile` file.
//!
//! HAProxy unlinks the file, then creates it with mode 0644 (`open(...,
//! O_CREAT|O_WRONLY|O_TRUNC, 0644)`) and writes the pid and a newline. A
//! process started under `umask 000` therefore still writes a file that only
//! its owner can change; creating it with the default 0666 would leave it
//! writable by everyone, and a pid file others can rewrite lets them direct
//! an operator's `kill $(cat pidfile)` at any process.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The mode HAProxy creates pid files with (before the umask applies).
const PIDFILE_MODE: u32 = 0o644;

/// The written pid file, removed when dropped.
pub struct PidFile(Option<PathBuf>);

impl PidFile {
    /// No pid file (checking a configuration, or none configured).
    pub fn none() -> PidFile {
        PidFile(None)
    }

    /// The file's path, when one was written.
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }

    /// Writes this process's pid to `path`; a failure is reported and the
    /// proxy goes on without a pid file, as before.
    pub fn write(path: Option<PathBuf>) -> PidFile {
        let Some(p) = path else {
            return PidFile(None);
        };
        match write_pid(&p, std::process::id()) {
            Ok(()) => PidFile(Some(p)),
            Err(e) => {
                eprintln!("[ALERT] cannot write pid file {}: {e}", p.display());
                PidFile(None)
            }
        }
    }
}

/// Replaces `path` with a new 0644 file holding `pid` and a newline.
fn write_pid(path: &Path, pid: u32) -> std::io::Result<()> {
    // A file left by an earlier run keeps its mode when truncated; removing
    // it first makes the mode below apply, as HAProxy's unlink() does.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PIDFILE_MODE)
        .open(path)?;
    f.write_all(format!("{pid}\n").as_bytes())
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_an_old_file_and_writes_pid_newline_0644() {
        let dir = std::env::temp_dir().join(format!("luahost-pidfile-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("p.pid");
        std::fs::write(&path, "old contents that are longer\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_pid(&path, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // The process umask can only remove bits from 0644.
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
