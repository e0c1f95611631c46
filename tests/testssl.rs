//! testssl.sh against an `https` listener: no HIGH or CRITICAL finding.
//!
//! The certificate is issued by the test's own CA (passed to testssl with `--add-ca`) and shaped
//! like a public CA's (a year's validity, a CRL distribution point), so that what is judged is
//! rouse's TLS: protocols, cipher suites and their order, key exchange, known vulnerabilities.
//! Needs `testssl` (Debian package `testssl.sh`): skipped with a `SKIP:` line without it, except
//! under `CI=true`.

mod common;

use common::tls::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_nothing_high_or_critical() {
    let tool = "testssl";
    if !have_tool("testssl", tool, "--version", "testssl.sh") {
        return;
    }
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let ca = Ca::new(&sb);
    let cert = ca.issue_public(&sb, "site", &["site.test"]);
    let rouse = serve_https(
        &sb,
        Some(&cert),
        &tls_route("site", &["site.test"], backend.addr, &cert),
    );
    let json = sb.path("testssl.json");
    let out = tokio::process::Command::new(tool)
        .args(["--quiet", "--color", "0", "--warnings", "off", "--add-ca"])
        .arg(sb.path("ca.pem"))
        .arg("--jsonfile-pretty")
        .arg(&json)
        .args(["--ip", "127.0.0.1"])
        .arg(format!("https://site.test:{}/", rouse.addr().port()))
        .output()
        .await
        .expect("run testssl");
    let report = String::from_utf8_lossy(&out.stdout);
    let parsed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("no testssl JSON ({e}):\n{report}")),
    )
    .unwrap();
    let findings: Vec<&serde_json::Value> = parsed["scanResult"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|target| target.as_object().into_iter().flatten())
        .filter_map(|(_, v)| v.as_array())
        .flatten()
        .collect();
    // The scan ran: it reached the server and judged its protocols.
    assert!(
        findings.len() > 50,
        "only {} findings:\n{report}",
        findings.len()
    );
    let tls13 = findings.iter().find(|f| f["id"] == "TLS1_3");
    assert!(
        tls13.is_some_and(|f| f["finding"]
            .as_str()
            .unwrap_or_default()
            .starts_with("offered")),
        "TLS 1.3 not offered? {tls13:?}"
    );
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(
        bad.is_empty(),
        "testssl found:\n{}\n\n{report}",
        bad.join("\n")
    );
}
