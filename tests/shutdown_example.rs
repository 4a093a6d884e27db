//! The shutdown example under a real SIGINT: Ctrl-C drains (and the example checks that every
//! request offered was processed or handed back), or aborts when the deadline passes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `target/<profile>/examples/shutdown`, which `cargo test` builds with the tests.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join("shutdown");
    assert!(
        path.exists(),
        "{} is missing: run through `cargo test`, which builds the examples",
        path.display()
    );
    path
}

/// Runs the example, sends SIGINT once it is running, and returns its stdout lines.
fn interrupt(args: &[&str]) -> Vec<String> {
    let mut child = Command::new(example())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("running;"), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    rest
}

#[test]
fn ctrl_c_drains_and_every_request_is_accounted_for() {
    let out = interrupt(&["--deadline-ms", "20000"]);
    assert_eq!(out.last().map(String::as_str), Some("drained"), "{out:?}");
}

#[test]
fn a_drain_past_its_deadline_aborts() {
    let out = interrupt(&["--slow", "--deadline-ms", "100"]);
    let last = out.last().unwrap();
    assert!(
        last.starts_with("not drained within 100ms: aborted"),
        "{out:?}"
    );
}
