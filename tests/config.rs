//! `rouse check`: a valid config is summarised; every kind of mistake is rejected with exit code 1
//! and `FILE:LINE:COL: message` pointing at the line to fix.

mod common;

use common::*;

/// A valid config; each rejection test changes one line of it.
const VALID: &str = r#"[proxy]
idle_exit = "10m"
drain_timeout = "10s"

[[listener]]
name = "http"
bind = "127.0.0.1:8080"
protocol = "http"

[[route]]
name = "blog"
hosts = ["blog.example.com", "*.blog.example.com"]
upstream = "127.0.0.1:9101"
idle_timeout = "30s"
start_timeout = "20s"
ready = "http:/healthz"
max_pending = 10
[route.backend]
kind = "exec"
command = ["$ROUSE", "static", "--listen", "127.0.0.1:9101", "--body", "blog"]
env = { KEY = "value" }
stop_signal = "SIGINT"
stop_timeout = "2s"

[[route]]
name = "shop"
hosts = ["shop.example.com"]
upstream = "127.0.0.1:9102"
[route.backend]
kind = "none"
"#;

/// `VALID` with the first line equal to `old` replaced by `new` (which may be several lines).
fn with(old: &str, new: &str) -> String {
    let mut done = false;
    let lines: Vec<String> = VALID
        .lines()
        .map(|l| {
            if !done && l == old {
                done = true;
                new.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(done, "test bug: no line {old:?} in VALID");
    lines.join("\n") + "\n"
}

/// 1-based number of the line containing `needle`; the last such line if `last`.
fn line_of(text: &str, needle: &str, last: bool) -> usize {
    let mut hits = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1);
    let found = if last { hits.last() } else { hits.next() };
    found.unwrap_or_else(|| panic!("test bug: {needle:?} not in config"))
}

/// Run `rouse check` on `text`; assert exit code 1 and `FILE:LINE:COL: message` with the given
/// line, and that the message mentions each of `mentions`. Returns the message.
fn assert_rejected(text: &str, line: usize, mentions: &[&str]) -> String {
    let sb = Sandbox::new();
    let path = sb.write("rouse.toml", text);
    let path = path.to_str().unwrap();
    let (status, _stdout, stderr) = run_rouse(&["check", "-c", path]);
    let numbered: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:3} | {l}\n", i + 1))
        .collect();
    assert_eq!(
        status.code(),
        Some(1),
        "rouse check should exit 1; stderr:\n{stderr}\nconfig:\n{numbered}"
    );
    let prefix = format!("{path}:{line}:");
    let rest = stderr.strip_prefix(&prefix).unwrap_or_else(|| {
        panic!("stderr should start with {prefix:?}COL: (line {line} is the offending one); stderr:\n{stderr}\nconfig:\n{numbered}")
    });
    let (col, message) = rest.split_once(':').unwrap_or(("", ""));
    assert!(
        col.parse::<usize>().is_ok_and(|c| c >= 1) && message.starts_with(' '),
        "expected FILE:LINE:COL: message, got:\n{stderr}"
    );
    let first_line = message.lines().next().unwrap_or("").trim();
    assert!(!first_line.is_empty(), "empty message:\n{stderr}");
    for m in mentions {
        assert!(
            message.contains(m),
            "message should mention {m:?}:\n{stderr}"
        );
    }
    first_line.to_string()
}

#[test]
fn check_accepts_a_valid_config_and_lists_its_routes() {
    let sb = Sandbox::new();
    let path = sb.write("rouse.toml", VALID);
    let (status, stdout, stderr) = run_rouse(&["check", "-c", path.to_str().unwrap()]);
    assert!(
        status.success(),
        "rouse check rejected a valid config: {}\n{stderr}",
        describe_exit(&status)
    );
    for name in ["blog", "shop", "blog.example.com", "shop.example.com"] {
        assert!(
            stdout.contains(name),
            "summary should list {name:?}; stdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn check_accepts_a_minimal_config() {
    let sb = Sandbox::new();
    let text = "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:8080\"\n\n[[route]]\nname = \"a\"\nhosts = [\"a.test\"]\nupstream = \"127.0.0.1:9000\"\n[route.backend]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n";
    let path = sb.write("rouse.toml", text);
    let (status, stdout, stderr) = run_rouse(&["check", "-c", path.to_str().unwrap()]);
    assert!(
        status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        describe_exit(&status)
    );
}

#[test]
fn rejects_unknown_keys() {
    for (after, key) in [
        ("drain_timeout = \"10s\"", "drain_timout = \"1s\""),
        ("idle_timeout = \"30s\"", "colour = \"red\""),
        ("stop_timeout = \"2s\"", "restart = \"always\""),
        ("protocol = \"http\"", "certificate = true"),
    ] {
        let text = with(after, &format!("{after}\n{key}"));
        let name = key.split(' ').next().unwrap();
        assert_rejected(&text, line_of(&text, key, false), &[name]);
    }
}

#[test]
fn rejects_unknown_table() {
    let text = with("[proxy]", "[proxi]");
    assert_rejected(&text, line_of(&text, "[proxi]", false), &["proxi"]);
}

#[test]
fn rejects_duplicate_route_names() {
    let text = with("name = \"shop\"", "name = \"blog\"");
    assert_rejected(&text, line_of(&text, "name = \"blog\"", true), &["blog"]);
}

#[test]
fn rejects_a_host_claimed_by_two_routes() {
    let text = with(
        "hosts = [\"shop.example.com\"]",
        "hosts = [\"shop.example.com\", \"blog.example.com\"]",
    );
    assert_rejected(
        &text,
        line_of(&text, "\"shop.example.com\", \"blog.example.com\"", false),
        &["blog.example.com"],
    );
}

#[test]
fn rejects_a_host_claimed_twice_in_another_case() {
    let text = with(
        "hosts = [\"shop.example.com\"]",
        "hosts = [\"Blog.Example.com\"]",
    );
    assert_rejected(&text, line_of(&text, "Blog.Example.com", false), &[]);
}

#[test]
fn rejects_wildcard_star_in_the_middle() {
    let text = with("hosts = [\"shop.example.com\"]", "hosts = [\"a.*.com\"]");
    assert_rejected(&text, line_of(&text, "a.*.com", false), &["a.*.com"]);
}

#[test]
fn rejects_wildcard_star_without_dot() {
    let text = with("hosts = [\"shop.example.com\"]", "hosts = [\"*foo.com\"]");
    assert_rejected(&text, line_of(&text, "*foo.com", false), &["*foo.com"]);
}

#[test]
fn rejects_bad_upstream_address() {
    for bad in ["127.0.0.1", "shop.example.com:80", "127.0.0.1:99999"] {
        let text = with(
            "upstream = \"127.0.0.1:9102\"",
            &format!("upstream = \"{bad}\""),
        );
        assert_rejected(
            &text,
            line_of(&text, &format!("upstream = \"{bad}\""), false),
            &[],
        );
    }
}

#[test]
fn rejects_bad_duration() {
    for (old, new) in [
        ("idle_timeout = \"30s\"", "idle_timeout = \"soon\""),
        ("drain_timeout = \"10s\"", "drain_timeout = \"10 parsecs\""),
    ] {
        let text = with(old, new);
        assert_rejected(&text, line_of(&text, new, false), &[]);
    }
}

#[test]
fn rejects_empty_command() {
    let old = "command = [\"$ROUSE\", \"static\", \"--listen\", \"127.0.0.1:9101\", \"--body\", \"blog\"]";
    let text = with(old, "command = []");
    assert_rejected(&text, line_of(&text, "command = []", false), &[]);
}

#[test]
fn rejects_exec_backend_without_command() {
    let old = "command = [\"$ROUSE\", \"static\", \"--listen\", \"127.0.0.1:9101\", \"--body\", \"blog\"]";
    let text = with(old, "");
    let sb = Sandbox::new();
    let path = sb.write("rouse.toml", &text);
    let (status, _, stderr) = run_rouse(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:", path.display())),
        "{stderr}"
    );
}

#[test]
fn rejects_bad_signal_name() {
    let text = with("stop_signal = \"SIGINT\"", "stop_signal = \"SIGNOPE\"");
    assert_rejected(&text, line_of(&text, "SIGNOPE", false), &["SIGNOPE"]);
}

#[test]
fn rejects_duplicate_listener_names() {
    let text = with(
        "protocol = \"http\"",
        "protocol = \"http\"\n\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:8081\"",
    );
    assert_rejected(&text, line_of(&text, "name = \"http\"", true), &["http"]);
}

#[test]
fn rejects_unknown_backend_kind_and_protocol() {
    let text = with("kind = \"none\"", "kind = \"lxc\"");
    assert_rejected(&text, line_of(&text, "lxc", false), &[]);
    let text = with("protocol = \"http\"", "protocol = \"gopher\"");
    assert_rejected(&text, line_of(&text, "gopher", false), &[]);
}

#[test]
fn rejects_toml_syntax_errors() {
    let text = with(
        "upstream = \"127.0.0.1:9102\"",
        "upstream = \"127.0.0.1:9102",
    );
    assert_rejected(
        &text,
        line_of(&text, "upstream = \"127.0.0.1:9102", false),
        &[],
    );
}

#[test]
fn serve_refuses_an_invalid_config_with_the_same_message() {
    let sb = Sandbox::new();
    let text = with("hosts = [\"shop.example.com\"]", "hosts = [\"a.*.com\"]");
    let path = sb.write("rouse.toml", &text);
    let path = path.to_str().unwrap();
    let line = line_of(&text, "a.*.com", false);
    let mut child = std::process::Command::new(ROUSE)
        .args(["serve", "-c", path])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(sb.path("serve.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "serve kept running with an invalid config; stderr:\n{}",
                sb.read("serve.err")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = strip_ansi(&sb.read("serve.err"));
    assert!(!status.success(), "serve accepted an invalid config");
    assert!(
        stderr.contains(&format!("{path}:{line}:")),
        "serve should report {path}:{line}:COL: like check does; stderr:\n{stderr}"
    );
}

#[test]
fn missing_config_file_is_reported() {
    let sb = Sandbox::new();
    let path = sb.p("nope.toml");
    let (status, _, stderr) = run_rouse(&["check", "-c", &path]);
    assert!(!status.success());
    assert!(
        stderr.contains(&path),
        "the message should name the file: {stderr}"
    );
}

#[test]
fn version_prints_the_version() {
    let (status, stdout, stderr) = run_rouse(&["--version"]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}
