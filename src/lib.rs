//! Support code shared by the integration tests in `tests/` and the benchmarks
//! in `benches/`: locating (and building) the workspace's real artifacts, and
//! finding external tools such as the stock `lua5.4`.
//!
//! Integration tests run real processes and load real `.so` files, so they need
//! the `luahost` binary and the module cdylibs built in the same profile as the
//! test itself. [`artifacts`] builds them once per test process with a nested
//! `cargo build` (the outer `cargo test` has released the build lock by then).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace packages whose binaries or cdylibs tests use.
const ARTIFACT_PACKAGES: &[&str] = &["luahost", "concat", "hello-rs", "hello-c"];

/// Paths of the built artifacts.
pub struct Artifacts {
    /// `target/<profile>`.
    pub dir: PathBuf,
}

impl Artifacts {
    /// The `luahost` executable.
    pub fn luahost(&self) -> PathBuf {
        self.dir.join("luahost")
    }

    /// A cdylib of the workspace, as cargo names it: `lib<name>.so`.
    pub fn cdylib(&self, crate_name: &str) -> PathBuf {
        self.dir
            .join(format!("lib{}.so", crate_name.replace('-', "_")))
    }

    /// A file that a build script placed in the profile directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The root of the workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of the running test or bench executable
/// (which lives in `target/<profile>/deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("executable has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Builds the workspace artifacts once (same profile as the caller) and
/// returns where they are. Panics with cargo's output if the build fails.
pub fn artifacts() -> &'static Artifacts {
    static ONCE: OnceLock<Artifacts> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = profile_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let target_dir = dir.parent().expect("profile dir has a parent");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--quiet")
            .arg("--target-dir")
            .arg(target_dir);
        if release {
            cmd.arg("--release");
        }
        for p in ARTIFACT_PACKAGES {
            cmd.arg("-p").arg(p);
        }
        cmd.current_dir(workspace_root());
        let out = cmd.output().expect("cannot run cargo build");
        assert!(
            out.status.success(),
            "cargo build of the test artifacts failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Artifacts { dir }
    })
}

/// True when running under CI (`CI=true`), where a missing tool is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds an external program on PATH. When it is missing, a test should not
/// silently pass: under CI this panics; elsewhere it prints why the test is
/// skipped and returns None.
pub fn require_program(name: &str, what_for: &str) -> Option<PathBuf> {
    if let Some(p) = find_on_path(name) {
        return Some(p);
    }
    missing(&format!("`{name}` is not installed ({what_for})"))
}

/// Like [`require_program`] for a file such as a Debian-packaged module.
pub fn require_file(path: &str, what_for: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.exists() {
        return Some(p.to_path_buf());
    }
    missing(&format!("{path} does not exist ({what_for})"))
}

fn missing<T>(why: &str) -> Option<T> {
    if under_ci() {
        panic!("{why}; CI must install it (see .ci/run)");
    }
    eprintln!("SKIPPED: {why}; install it to run this test");
    None
}

/// Searches PATH for an executable.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A fresh scratch directory under the target directory, removed and
/// recreated on each call with the same name.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = profile_dir().join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Output of a finished process, decoded.
#[derive(Debug)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion, failing the test if it cannot start or
/// takes longer than `secs` seconds.
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Output {
        status: status.code(),
        stdout,
        stderr,
    }
}
