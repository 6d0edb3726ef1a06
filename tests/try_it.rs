//! The README's "Try it" section, run as written: the demo, opening its
//! report, the package's own verifier; then the other commands on what the
//! demo left, without a configuration file. `cargo` and `xdg-open` are
//! stand-ins on `PATH`: `cargo run --release --` runs the binary the tests
//! built, and `xdg-open` notes the file it was asked to open.

use std::path::{Path, PathBuf};
use std::process::Command;

use rstest::rstest;

/// The indented command lines of the README's "Try it" section, block by
/// block.
fn try_it_blocks() -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("\n## Try it\n").expect("a Try it section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        match line.strip_prefix("    ") {
            Some(command) => {
                if !in_block {
                    blocks.push(Vec::new());
                }
                blocks.last_mut().unwrap().push(command.to_owned());
                in_block = true;
            }
            None => in_block = false,
        }
    }
    blocks
}

/// A folder of stand-ins for `cargo` and `xdg-open`.
fn stand_ins(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let scripts = [
        (
            "cargo",
            format!(
                "#!/bin/sh\n[ \"$1 $2 $3\" = \"run --release --\" ] || {{ echo \"not cargo run --release --: $*\" >&2; exit 97; }}\nshift 3\nexec '{}' \"$@\"\n",
                env!("CARGO_BIN_EXE_rollcall")
            ),
        ),
        (
            "xdg-open",
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
                dir.join("opened").display()
            ),
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs `line` with `sh` in `dir`, the stand-ins first on `PATH`.
fn run(dir: &Path, bin: &Path, line: &str) -> (String, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_LOG", "error")
        .env_remove("ROLLCALL_DATABASE_URL")
        .env_remove("ROLLCALL_CONFIG")
        .env_remove("ROLLCALL_LISTEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "`{line}` failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

#[rstest]
#[case::wecom(None, "企业微信")]
#[case::dingtalk(Some("dingtalk"), "钉钉")]
#[case::feishu(Some("feishu"), "飞书")]
fn the_readme_try_it_lines_run_as_written(#[case] platform: Option<&str>, #[case] chat: &str) {
    let blocks = try_it_blocks();
    assert_eq!(
        blocks.len(),
        2,
        "the demo's three lines, then the other commands"
    );
    let (first, others) = (&blocks[0], &blocks[1]);
    assert_eq!(first.len(), 3, "three lines: demo, open the report, verify");
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_ins(dir.path());

    // 1. The demo, on the platform asked for.
    let demo = match platform {
        None => first[0].clone(),
        Some(p) => first[0].replacen(" demo ", &format!(" demo --platform {p} "), 1),
    };
    let (timeline, _) = run(dir.path(), &bin, &demo);
    for step in [
        "formal_notice",
        "departure_started",
        "exhibit_filed",
        "departure_confirmed",
        "union_recorded",
        "termination_notice",
        "termination_acknowledged",
        "late",
        "left_early",
        "contract_reminder",
        "contract_renew",
    ] {
        assert!(
            timeline.contains(step),
            "no {step} in the timeline:\n{timeline}"
        );
    }
    assert!(
        timeline.contains("RESULT: all") && !timeline.contains("[FAIL]"),
        "the demo shows its verifier's result:\n{timeline}"
    );
    assert!(timeline.contains("demo-package/report.html"), "{timeline}");

    // 2. Open the report.
    run(dir.path(), &bin, &first[1]);
    let opened = std::fs::read_to_string(dir.path().join("opened")).unwrap();
    let report = std::fs::read_to_string(dir.path().join(opened.trim())).unwrap();
    assert!(
        report.contains("<html") && report.contains("张三"),
        "{report}"
    );
    assert!(
        report.contains(chat),
        "the report names the platform {chat}"
    );

    // 3. The package's own verifier, with the published fingerprint.
    let (verified, _) = run(dir.path(), &bin, &first[2]);
    assert!(
        verified.contains("RESULT: all") && !verified.contains("[FAIL]"),
        "{verified}"
    );
    // The fingerprint is the database's evidence key's.
    let (pubkey, _) = run(
        dir.path(),
        &bin,
        "cargo run --release -- --db demo.db evidence pubkey",
    );
    let fingerprint = std::fs::read_to_string(dir.path().join("demo.fingerprint")).unwrap();
    assert!(pubkey.contains(fingerprint.trim()), "{pubkey}");

    // The other commands, on what the demo left, without a configuration.
    assert_eq!(others.len(), 4);
    let (events, _) = run(dir.path(), &bin, &others[0]);
    assert!(
        events.contains("zhangsan") && events.contains("wangmin"),
        "{events}"
    );
    let (log, _) = run(dir.path(), &bin, &others[1]);
    assert!(!log.trim().is_empty(), "verify says what it checked");
    run(dir.path(), &bin, &others[2]);
    let exported = std::fs::read_to_string(dir.path().join("pkg/report.html")).unwrap();
    assert!(
        exported.contains(chat),
        "the export names the platform {chat}"
    );
    let (again, _) = run(
        dir.path(),
        &bin,
        "python3 pkg/verify.py --fingerprint \"$(cat demo.fingerprint)\"",
    );
    assert!(
        again.contains("RESULT: all") && !again.contains("[FAIL]"),
        "{again}"
    );
    // The month's sheet, beside the one HR downloaded in the story.
    let (sheet, _) = run(dir.path(), &bin, &others[3]);
    assert!(sheet.contains("5 employees"), "{sheet}");
    for file in ["sheet.xlsx", "demo-attendance-2026-12.xlsx"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        assert!(bytes.starts_with(b"PK"), "{file} is an .xlsx (a zip)");
    }
}

/// What a second demo on the same `--db` would overwrite (or an earlier
/// demo's witness, which a new database would contradict) is refused,
/// before anything is written.
#[rstest]
#[case::package("demo-package")]
#[case::witness("demo-evidence.key.witness")]
#[case::sheet("demo-attendance-2026-12.xlsx")]
fn a_second_demo_on_the_same_db_is_refused(#[case] left: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(left)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["demo", "--db", "demo.db"])
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{left} exists already")), "{err}");
    assert!(!dir.path().join("demo.db").exists());
}
