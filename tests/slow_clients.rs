//! slowhttptest against rouse, for real: slow headers (slowloris), slow bodies (R-U-Dead-Yet)
//! and slow reads, each from hundreds of connections, while an ordinary client keeps asking.
//! Every ordinary request must be answered in time: the slow ones are cut at `header_timeout`
//! and `body_timeout` (those that pause longer than it) and hold nothing that others need.
//!
//! Needs `slowhttptest` (Debian package of that name): skipped with a `SKIP:` line without it,
//! except under `CI=true`, where its absence fails the test.

mod common;

use common::scripted::*;
use common::*;
use std::time::{Duration, Instant};

// Two threads: the backend's tasks (hundreds of slow connections) must not delay the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_attacks_leave_ordinary_clients_served() {
    let tool = "slowhttptest";
    if !have_tool("slowhttptest_attacks", tool, "-h", "slowhttptest") {
        return;
    }
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    // The attack addresses rouse by IP, so that host routes too.
    let config = "[proxy]\nheader_timeout = \"2s\"\nbody_timeout = \"2s\"\n\n".to_string()
        + &none_route("a", &["a.test", "127.0.0.1"], backend.addr);
    let rouse = Rouse::serve(&sb, &config);
    let port = rouse.addr().port();

    let attacks: [(&str, Vec<String>); 3] = [
        (
            "slow headers",
            vec!["-H", "-c", "1000", "-r", "250", "-i", "1"]
                .into_iter()
                .map(String::from)
                .chain(["-u".to_string(), format!("http://127.0.0.1:{port}/")])
                .collect(),
        ),
        (
            "slow body",
            // A pause of 3 s between body bytes: longer than body_timeout, so they are cut.
            vec!["-B", "-c", "500", "-r", "250", "-i", "3", "-s", "8192"]
                .into_iter()
                .map(String::from)
                .chain(["-u".to_string(), format!("http://127.0.0.1:{port}/")])
                .collect(),
        ),
        (
            "slow read",
            vec![
                "-X", "-c", "200", "-r", "100", "-w", "1", "-y", "64", "-n", "1", "-z", "16",
            ]
            .into_iter()
            .map(String::from)
            .chain(["-u".to_string(), format!("http://127.0.0.1:{port}/big")])
            .collect(),
        ),
    ];
    for (name, args) in attacks {
        let attack = tokio::process::Command::new(tool)
            .args(&args)
            .args([
                "-l",
                "8",
                "-p",
                "3",
                "-o",
                &sb.p(name.replace(' ', "-").as_str()),
                "-g",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run slowhttptest");
        // Let the attack open its connections, then ask as an ordinary client, four times a
        // second, until it ends.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        let (mut asked, mut slowest) = (0, Duration::ZERO);
        while started.elapsed() < Duration::from_secs(5) {
            let t = Instant::now();
            let resp = tokio::time::timeout(
                Duration::from_secs(2),
                try_send(
                    rouse.addr(),
                    "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                ),
            )
            .await;
            match resp {
                Ok(Ok(resp)) => assert_eq!(resp.status, 200, "{name}: {resp:?}"),
                Ok(Err(e)) => panic!("{name}: an ordinary request failed: {e}"),
                Err(_) => panic!("{name}: an ordinary request got no answer within 2 s"),
            }
            asked += 1;
            slowest = slowest.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let out = attack.wait_with_output().await.unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(asked >= 10, "{name}: only {asked} ordinary requests");
        // The attack really ran: slowhttptest saw its connections and the service.
        assert!(report.contains("service available"), "{name}:\n{report}");
        eprintln!("{name}: {asked} ordinary requests answered, slowest {slowest:?}");
    }
    assert!(
        rouse.log_count(&["connection cut", "request head not complete"]) > 0,
        "no slow head was cut"
    );
    assert!(
        rouse.log_count(&["connection cut", "request body sent nothing"]) > 0,
        "no slow body was cut"
    );
}
