//! The operator console in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver) by `fantoccini`. After the demo's pipeline, the console of a worker shows the
//! processes, queue figures and table figures `minion status --json` reports, a discarded job's
//! errors, and no write button; a forged POST is refused. A write-access console retries a job
//! from its page (after the confirmation) and still refuses requests without its token. Each page
//! is saved as a screenshot in `target/console-screenshots/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::{sigterm, StoreKind, TestEnv};
use crate::service::{free_port, wait_status};

/// In the database URL the console's process gets; no page may show it.
const SECRET: &str = "console-secret-pw";

/// Where the screenshots go (an artifact of the test run).
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/setup.sh installs Debian's chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        // (chromedriver keeps HTTP/1.0 connections open, so only connecting is checked.)
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1360,1000"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.0 request; returns the status and body.
fn http(port: u16, method: &str, path: &str, form: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

/// Opens `path`, waits for `ready` (a CSS selector), saves a screenshot as `name`.png, checks
/// that the page shows no secret, and returns its source.
async fn visit(browser: &Client, port: u16, path: &str, ready: &str, name: &str) -> String {
    browser
        .goto(&format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(ready))
        .await
        .unwrap_or_else(|err| panic!("{path}: no `{ready}`: {err}"));
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    let source = browser.source().await.unwrap();
    assert!(
        !source.contains(SECRET),
        "{path} shows the database password"
    );
    assert!(
        !source.contains("postgres://"),
        "{path} shows a database URL"
    );
    source
}

async fn attr(browser: &Client, css: &str, name: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no `{css}`: {err}"))
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("`{css}` has no {name}"))
}

/// Clicks `button`, accepts the confirmation and waits for the page that says `done`.
async fn confirm(browser: &Client, button: &str, done: &str) {
    click(browser, button).await;
    browser.accept_alert().await.unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!("#flash[data-done='{done}']")))
        .await
        .unwrap_or_else(|err| panic!("no `{done}` after {button}: {err}"));
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no `{css}`: {err}"))
        .click()
        .await
        .unwrap();
}

#[test]
fn the_console_shows_what_the_cli_reports_and_writes_only_with_its_token() {
    let env = TestEnv::new(StoreKind::Local);
    env.ok(&[
        "demo",
        "--rows",
        "60000",
        "--keys",
        "12000",
        "--segment-rows",
        "10000",
        "--update-rows",
        "3000",
        "--update-segment-rows",
        "500",
    ]);
    let failed: Value = env.json(&[
        "job",
        "submit",
        "fail",
        "--message",
        "the disk is on fire",
        "--permanent",
        "--json",
    ]);
    let failed = failed["id"].to_string();
    let jobs = env.path("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("nightly.toml"),
        "[[schedule]]\nname = \"nightly-plan\"\ncron = \"0 0 3 * * *\"\nkind = \"plan\"\ntables = [\"*\"]\n",
    )
    .unwrap();
    let secret_url = env
        .db
        .url
        .replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
    assert_ne!(
        secret_url, env.db.url,
        "the test database URL has the expected shape"
    );
    let port = free_port();
    let mut worker = env.spawn_with(
        "worker",
        &[
            "worker",
            "--id",
            "console-w1",
            "--poll-interval",
            "100ms",
            "--scheduler",
            "--jobs",
            jobs.to_str().unwrap(),
            "--leader-lease",
            "3s",
            "--sample-interval",
            "200ms",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--console",
        ],
        &[("DATABASE_URL", &secret_url)],
    );
    let log = || env.log("worker");
    wait_status(port, "/readyz", 200, Duration::from_secs(20), &log);
    env.wait_job_state(&failed, "discarded");
    // Until the queue is still (the demo's last follow-ups done), so the figures hold.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = env.json(&["status", "--json"]);
        let states: Vec<&String> = status["queue"]["by_state"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        if states == ["discarded"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never settled: {status}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The leader has recorded a few depth samples.
    std::thread::sleep(Duration::from_millis(800));
    let status: Value = env.json(&["status", "--json"]);

    let driver = Driver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = driver.browser().await;

        // Overview: the worker and its scheduler, the leader, the queue as `status` counts it.
        visit(&browser, port, "/", "#processes", "overview").await;
        for process in status["processes"].as_array().unwrap() {
            let id = process["id"].as_str().unwrap();
            attr(
                &browser,
                &format!("tr.process[data-id='{id}']"),
                "data-role",
            )
            .await;
        }
        assert_eq!(
            attr(&browser, "#leader", "data-leader").await,
            status["leader"]["leader_id"].as_str().unwrap()
        );
        let by_state = status["queue"]["by_state"].as_object().unwrap();
        assert!(by_state.contains_key("discarded"), "{status}");
        for (state, kinds) in by_state {
            for (kind, n) in kinds.as_object().unwrap() {
                let css = format!("td.depth[data-state='{state}'][data-kind='{kind}']");
                assert_eq!(
                    attr(&browser, &css, "data-count").await,
                    n.to_string(),
                    "{css}"
                );
            }
        }
        let points: u32 = attr(&browser, "#depth-chart", "data-points")
            .await
            .parse()
            .unwrap();
        assert!(points > 0);
        attr(
            &browser,
            &format!("tr.failure[data-id='{failed}']"),
            "data-id",
        )
        .await;
        assert_eq!(attr(&browser, "#access", "data-access").await, "read-only");

        // Tables: the figures `status` reports, to the byte.
        visit(&browser, port, "/tables", "#tables", "tables").await;
        visit(&browser, port, "/tables/orders", "#table-summary", "table").await;
        let table = &status["tables"][0];
        assert_eq!(table["table"], "orders");
        let ratio: f64 = attr(&browser, "#dead-row-ratio", "data-value")
            .await
            .parse()
            .unwrap();
        assert_eq!(ratio, table["dead_row_ratio"].as_f64().unwrap());
        let reclaimed = attr(&browser, "#reclaimed", "data-bytes").await;
        assert_eq!(reclaimed, table["reclaimed_bytes"].to_string());
        assert!(table["reclaimed_bytes"].as_i64().unwrap() > 0, "{table}");
        assert_eq!(
            attr(&browser, "#online-segments", "data-value").await,
            table["online_segments"].to_string()
        );
        let segments: u32 = attr(&browser, "#segments-chart", "data-points")
            .await
            .parse()
            .unwrap();
        assert!(segments > 0, "the history has the demo's prebuilds");
        browser
            .find(Locator::Css("#plan"))
            .await
            .expect("a plan preview");

        // Jobs: the discarded job in the filtered list, then its page with its error.
        visit(&browser, port, "/jobs?state=discarded", "#jobs", "jobs").await;
        attr(
            &browser,
            &format!("tr.job-row[data-id='{failed}']"),
            "data-state",
        )
        .await;
        let page = visit(&browser, port, &format!("/jobs/{failed}"), "#errors", "job").await;
        assert!(page.contains("the disk is on fire"), "{page}");
        assert!(browser.find(Locator::Css("#retry-button")).await.is_err());

        visit(&browser, port, "/schedules", "#schedules", "schedules").await;
        attr(
            &browser,
            "tr.schedule[data-name='nightly-plan']",
            "data-name",
        )
        .await;
        browser.close().await.unwrap();
    });

    // Read-only: a forged POST is refused and changes nothing.
    let (code, body) = http(port, "POST", &format!("/jobs/{failed}/retry"), "csrf=guess");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--console-write"), "{body}");
    let (code, _) = http(port, "GET", "/jobs?state=sideways", "");
    assert_eq!(code, 400);
    let (code, _) = http(port, "GET", "/jobs/999999999", "");
    assert_eq!(code, 404);
    // A NUL byte in a filter or a name is a bad request, not a server error (issue 26).
    for path in ["/jobs?kind=a%00b", "/jobs?table=%00", "/tables/orders%00x"] {
        let (code, body) = http(port, "GET", path, "");
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("NUL"), "{path}: {body}");
    }
    sigterm(&worker);
    assert!(worker.wait().unwrap().success(), "{}", log());
    env.wait_job_state(&failed, "discarded");

    // Write access (a scheduler process: nothing runs the retried job, so it stays available).
    let port = free_port();
    let mut console = env.spawn(
        "console",
        &[
            "scheduler",
            "--id",
            "console-s2",
            "--jobs",
            jobs.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--console-write",
        ],
    );
    wait_status(port, "/readyz", 200, Duration::from_secs(20), &|| {
        env.log("console")
    });
    for forged in ["", "csrf=", "csrf=0000"] {
        let (code, body) = http(port, "POST", &format!("/jobs/{failed}/retry"), forged);
        assert_eq!(code, 403, "{forged}: {body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    env.wait_job_state(&failed, "discarded");
    let later: Value = env.json(&["job", "submit", "noop", "--in", "1h", "--json"]);
    let later = later["id"].to_string();
    runtime.block_on(async {
        let browser = driver.browser().await;
        visit(
            &browser,
            port,
            &format!("/jobs/{failed}"),
            "#retry-button",
            "job-write",
        )
        .await;
        assert_eq!(attr(&browser, "#access", "data-access").await, "write");
        // The confirmation is asked first: dismissing it sends nothing.
        click(&browser, "#retry-button").await;
        browser.dismiss_alert().await.unwrap();
        assert_eq!(attr(&browser, "#job", "data-state").await, "discarded");
        confirm(&browser, "#retry-button", "retried").await;
        assert_eq!(attr(&browser, "#job", "data-state").await, "available");
        // A job that has not run yet has a Cancel button instead.
        visit(
            &browser,
            port,
            &format!("/jobs/{later}"),
            "#cancel-button",
            "job-cancel",
        )
        .await;
        confirm(&browser, "#cancel-button", "cancelled").await;
        browser.close().await.unwrap();
    });
    let job: Value = env.json(&["job", "show", &failed, "--json"]);
    assert_eq!(job["state"], "available", "{job}");
    let job: Value = env.json(&["job", "show", &later, "--json"]);
    assert_eq!(job["state"], "cancelled", "{job}");
    sigterm(&console);
    assert!(console.wait().unwrap().success());
}
