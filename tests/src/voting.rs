//! The voting app example (stack-examples/voting-app): its images, built
//! once per test process by the example's own build-images.sh (cached by
//! content hash: a warm run only hashes files), and the paths a test needs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cmd::try_run;

/// A cold build (debootstrap of a Debian root with redis, postgres and
/// python, then five small images) takes minutes on two shared cores.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// stack-examples/voting-app in this checkout.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stack-examples/voting-app")
}

/// The example's stack file.
pub fn stack_file() -> PathBuf {
    dir().join("stack.yml")
}

/// Runs build-images.sh once per process; panics with its output if it
/// fails (the next caller panics with the same output).
pub fn build_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script = dir().join("build-images.sh");
        let out = try_run(Command::new("bash").arg(&script), BUILD_TIMEOUT)?;
        if out.success() {
            eprintln!("{}", out.stdout.trim_end());
            Ok(())
        } else {
            Err(format!("{} failed:\n{out}", script.display()))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
