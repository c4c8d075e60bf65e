//! A headless Chromium session for the browser tests: chromedriver from
//! `m2m::node::tools::start_chromedriver`, driven over W3C WebDriver.
//!
//! The client is these few calls over reqwest rather than fantoccini: fantoccini brings
//! Mozilla's `webdriver` crate with a second Unicode (ICU) stack, `http` 0.2 and two `cookie`
//! versions into every build of the test binary, for five HTTP requests the tests need (new
//! session, navigate, run a script, screenshot, end the session).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use m2m::node::tools::{ChromeDriverHandle, start_chromedriver};
use serde_json::{Value, json};

/// One browser window. Dropping it stops chromedriver and the browser (its process group);
/// [`Browser::close`] ends the session first.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: ChromeDriverHandle,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` × `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Self {
        let driver = start_chromedriver()
            .await
            .expect("chromedriver (Debian chromium-driver)");
        let http = reqwest::Client::new();
        let profile = driver.scratch_dir().join("profile");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": driver.browser(),
                "args": [
                    "--headless=new",
                    // Tests run as root in CI, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer = command(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", driver.url()),
            capabilities,
        )
        .await;
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Self {
            http,
            session,
            driver,
        }
    }

    fn url(&self, tail: &str) -> String {
        let session = format!("{}/session/{}", self.driver.url(), self.session);
        if tail.is_empty() {
            session
        } else {
            format!("{session}/{tail}")
        }
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn open(&self, url: &str) {
        command(
            &self.http,
            reqwest::Method::POST,
            &self.url("url"),
            json!({ "url": url }),
        )
        .await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn run(&self, script: &str) -> Value {
        command(
            &self.http,
            reqwest::Method::POST,
            &self.url("execute/sync"),
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Runs `script` until `accept` takes its value, at most `within`; the last value.
    pub async fn wait_for(
        &self,
        script: &str,
        within: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.run(script).await;
            if accept(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not get there within {within:?}: {value}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Ends the session (the browser quits), then chromedriver stops.
    pub async fn close(self) {
        command(
            &self.http,
            reqwest::Method::DELETE,
            &self.url(""),
            Value::Null,
        )
        .await;
    }

    /// A PNG of the whole page (the window is first made as tall as the page), written to
    /// `path` (its directory made).
    pub async fn screenshot(&self, path: &Path) {
        let size = self
            .run("return [window.outerWidth, document.documentElement.scrollHeight + window.outerHeight - window.innerHeight];")
            .await;
        command(
            &self.http,
            reqwest::Method::POST,
            &self.url("window/rect"),
            json!({ "width": size[0], "height": size[1] }),
        )
        .await;
        let answer = command(
            &self.http,
            reqwest::Method::GET,
            &self.url("screenshot"),
            Value::Null,
        )
        .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer.as_str().expect("screenshot data"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// One WebDriver command; its `value`, or the test fails with the driver's error.
async fn command(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Value) -> Value {
    let request = http
        .request(method.clone(), url)
        .timeout(Duration::from_secs(60));
    let request = if body.is_null() {
        request
    } else {
        request.json(&body)
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!(
        status.is_success(),
        "WebDriver {method} {url}: {status} {answer}"
    );
    answer["value"].clone()
}

/// Where screenshots are kept: `$CARGO_TARGET_DIR/m2m-artifacts/` (else `target/`), so CI keeps
/// them with the build.
pub fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("m2m-artifacts").join(name)
}
