//! Real sensor sources for priced routes, configured per route:
//!
//! ```toml
//! sensor = "humidity"                 # short form: a simulated humidity sensor
//!
//! [sell.btc.route.sensor]             # or a table (any route: EVM, Bitcoin, L402)
//! source = "file"                     # simulated | file | command | http
//! path = "/sys/class/thermal/thermal_zone0/temp"
//! scale = 0.001                       # value = number × scale + offset
//! name = "cpu-temperature"            # SenML name and unit (default: from `kind`)
//! unit = "Cel"
//! every_secs = 5                      # sampling interval
//! timeout_secs = 2                    # a sample that takes longer failed
//! ```
//!
//! `command = ["vcgencmd", "measure_temp"]` runs a program (no shell) and takes the first number
//! of its output; `url = "http://…"` with `pointer = "/main/temp"` (RFC 6901) takes a number from
//! an upstream JSON document.
//!
//! Sampling runs in a background task, not in the request: a paid request never waits on a slow
//! program or upstream, and a seller answering thousands of requests a second forks nothing per
//! request. The price of that is a reading up to `every_secs` old, which its SenML time shows. A
//! route whose last sample failed, or whose newest sample is older than two intervals plus the
//! timeout (a sample hangs), has no reading to sell: buyers get 503 and pay nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::sensor::{SampleError, SenmlRecord, SensorError, SensorKind, SensorSource};

/// How a route gets its readings.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// What is measured: the default name and unit, and the simulated quantity.
    pub kind: SensorKind,
    /// Where values come from.
    pub source: Source,
    /// SenML name (default: `kind`'s).
    pub name: Option<String>,
    /// SenML unit (default: `kind`'s).
    pub unit: Option<String>,
    /// Seconds between samples.
    pub every_secs: u64,
    /// Seconds one sample may take.
    pub timeout_secs: u64,
    /// The number read is multiplied by this …
    pub scale: f64,
    /// … and this is added.
    pub offset: f64,
}

/// Where a route's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The seller's fallback source (the simulated sensor, unless an embedder passed its own).
    Simulated,
    /// The first number in a file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// The first number a program prints.
    Command {
        /// Program and arguments (run without a shell).
        argv: Vec<String>,
    },
    /// A number in an upstream's JSON answer.
    Http {
        /// The upstream.
        url: String,
        /// JSON pointer to the number; empty = the whole document.
        pointer: String,
    },
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self::simulated(SensorKind::default())
    }
}

impl SensorConfig {
    /// A simulated sensor of `kind`.
    pub fn simulated(kind: SensorKind) -> Self {
        Self {
            kind,
            source: Source::Simulated,
            name: None,
            unit: None,
            every_secs: DEFAULT_EVERY_SECS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// The source that serves this route: `fallback` when simulated, else a sampler started on
    /// the current Tokio runtime (its first sample is taken before this returns, so a broken
    /// sensor shows in the log at start).
    pub async fn start(
        &self,
        device: &str,
        fallback: &Arc<dyn SensorSource>,
    ) -> Arc<dyn SensorSource> {
        if self.source == Source::Simulated {
            return fallback.clone();
        }
        Arc::new(SampledSensor::start(self.clone(), device).await)
    }
}

const DEFAULT_EVERY_SECS: u64 = 1;
const DEFAULT_TIMEOUT_SECS: u64 = 5;

/// The table form, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorTable {
    source: SourceName,
    #[serde(default)]
    kind: SensorKind,
    path: Option<PathBuf>,
    command: Option<Vec<String>>,
    url: Option<String>,
    pointer: Option<String>,
    name: Option<String>,
    unit: Option<String>,
    #[serde(default = "default_every")]
    every_secs: u64,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_scale")]
    scale: f64,
    #[serde(default)]
    offset: f64,
}

#[derive(Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SourceName {
    Simulated,
    File,
    Command,
    Http,
}

fn default_every() -> u64 {
    DEFAULT_EVERY_SECS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
fn default_scale() -> f64 {
    1.0
}

impl TryFrom<SensorTable> for SensorConfig {
    type Error = String;

    fn try_from(table: SensorTable) -> Result<Self, String> {
        let source_name = match table.source {
            SourceName::Simulated => "simulated",
            SourceName::File => "file",
            SourceName::Command => "command",
            SourceName::Http => "http",
        };
        for (present, field, owner) in [
            (table.path.is_some(), "path", SourceName::File),
            (table.command.is_some(), "command", SourceName::Command),
            (table.url.is_some(), "url", SourceName::Http),
            (table.pointer.is_some(), "pointer", SourceName::Http),
        ] {
            if present && table.source != owner {
                return Err(format!(
                    "sensor.{field} does not apply to source = \"{source_name}\""
                ));
            }
        }
        let needed =
            |field: &str| format!("sensor.{field} is needed by source = \"{source_name}\"");
        let source = match table.source {
            SourceName::Simulated => Source::Simulated,
            SourceName::File => Source::File {
                path: table.path.ok_or_else(|| needed("path"))?,
            },
            SourceName::Command => {
                let argv = table.command.ok_or_else(|| needed("command"))?;
                if argv.first().is_none_or(String::is_empty) {
                    return Err("sensor.command must name a program first".into());
                }
                Source::Command { argv }
            }
            SourceName::Http => {
                let url = table.url.ok_or_else(|| needed("url"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err("sensor.url must be an http:// or https:// URL".into());
                }
                let pointer = table.pointer.unwrap_or_default();
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err("sensor.pointer must be empty or start with / (RFC 6901)".into());
                }
                Source::Http { url, pointer }
            }
        };
        if let Some(name) = &table.name
            && !is_senml_name(name)
        {
            return Err(
                "sensor.name must start with a letter or digit and hold only letters, digits and - : . / _ (RFC 8428)".into(),
            );
        }
        if table.every_secs == 0 || table.timeout_secs == 0 {
            return Err("sensor.every_secs and sensor.timeout_secs must be positive".into());
        }
        if !table.scale.is_finite() || !table.offset.is_finite() {
            return Err("sensor.scale and sensor.offset must be finite numbers".into());
        }
        Ok(Self {
            kind: table.kind,
            source,
            name: table.name,
            unit: table.unit,
            every_secs: table.every_secs,
            timeout_secs: table.timeout_secs,
            scale: table.scale,
            offset: table.offset,
        })
    }
}

/// RFC 8428 §4.5.1: names match `^[a-zA-Z0-9][-:./_a-zA-Z0-9]*$`.
fn is_senml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-:./_".contains(c))
}

impl<'de> Deserialize<'de> for SensorConfig {
    /// A string is a simulated kind; a table is a full source. Written by hand because serde's
    /// untagged enums replace the inner error (which names the bad field) with a generic one.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SensorConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sensor kind such as \"temperature\", or a sensor table")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SensorConfig, E> {
                use serde::de::IntoDeserializer;
                let kind = SensorKind::deserialize(text.into_deserializer())?;
                Ok(SensorConfig::simulated(kind))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SensorConfig, A::Error> {
                let table =
                    SensorTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                SensorConfig::try_from(table).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A source sampled in the background; requests read its newest sample.
pub struct SampledSensor {
    base_name: String,
    name: String,
    unit: String,
    max_age: Duration,
    latest: Arc<Mutex<Latest>>,
    sampler: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Latest {
    /// Value, its Unix time, and when it was taken.
    good: Option<(f64, f64, Instant)>,
    /// Set when the newest finished sample failed.
    failure: Option<Arc<SampleError>>,
}

impl std::fmt::Debug for SampledSensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampledSensor")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for SampledSensor {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl SampledSensor {
    /// Takes a first sample, then keeps sampling every `config.every_secs` until dropped.
    pub async fn start(config: SensorConfig, device: &str) -> Self {
        let (default_name, default_unit) = config.kind.name_and_unit();
        let name = config.name.clone().unwrap_or_else(|| default_name.into());
        let latest = Arc::new(Mutex::new(Latest::default()));
        let http = crate::http_client::client_with(Duration::from_secs(config.timeout_secs), 1);
        let every = Duration::from_secs(config.every_secs);
        let timeout = Duration::from_secs(config.timeout_secs);
        sample_once(&config, &http, &latest, &name).await;
        let sampler = {
            let (config, latest, name) = (config.clone(), latest.clone(), name.clone());
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    sample_once(&config, &http, &latest, &name).await;
                }
            })
        };
        Self {
            base_name: format!("urn:dev:m2m:{device}:"),
            unit: config.unit.unwrap_or_else(|| default_unit.into()),
            name,
            max_age: every * 2 + timeout,
            latest,
            sampler,
        }
    }
}

impl SensorSource for SampledSensor {
    fn read(&self, _kind: SensorKind) -> Result<Vec<SenmlRecord>, SensorError> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(failure) = &latest.failure {
            return Err(SensorError::Failed(failure.clone()));
        }
        let (value, time, taken) = latest.good.ok_or(SensorError::NoSample)?;
        let age = taken.elapsed();
        if age > self.max_age {
            return Err(SensorError::Stale {
                age_secs: age.as_secs(),
            });
        }
        Ok(vec![SenmlRecord {
            base_name: Some(self.base_name.clone()),
            name: self.name.clone(),
            unit: self.unit.clone(),
            value,
            time,
        }])
    }
}

/// One sample, recorded in `latest`; a change between working and failing is logged once.
async fn sample_once(
    config: &SensorConfig,
    http: &reqwest::Client,
    latest: &Mutex<Latest>,
    name: &str,
) {
    let timeout = Duration::from_secs(config.timeout_secs);
    let outcome = match tokio::time::timeout(timeout, raw_sample(&config.source, http)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(SampleError::Timeout {
            secs: config.timeout_secs,
        }),
    };
    let mut latest = latest.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
        Ok(raw) => {
            if latest.failure.take().is_some() {
                tracing::info!(sensor = name, "sensor works again");
            }
            let value = ((raw * config.scale + config.offset) * 1e6).round() / 1e6;
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64().floor())
                .unwrap_or_default();
            latest.good = Some((value, time, Instant::now()));
        }
        Err(error) => {
            if latest.failure.is_none() {
                tracing::warn!(sensor = name, error = %crate::events::error_line(&error), "sensor failed; its route answers 503 until it works");
            }
            latest.failure = Some(Arc::new(error));
        }
    }
}

/// The number the source gives, before scale and offset.
async fn raw_sample(source: &Source, http: &reqwest::Client) -> Result<f64, SampleError> {
    match source {
        Source::Simulated => unreachable!("simulated routes use the fallback source"),
        Source::File { path } => {
            // A blocking read off the runtime: a hung mount must not stall request handling.
            let shown = path.display().to_string();
            let read_path = path.clone();
            let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(read_path))
                .await
                .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
                .map_err(|source| SampleError::File {
                    path: shown.clone(),
                    source,
                })?;
            first_number(&text).ok_or(SampleError::NoNumber { what: shown })
        }
        Source::Command { argv } => {
            let program = argv[0].clone();
            let output = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|source| SampleError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            if !output.status.success() {
                return Err(SampleError::Exit {
                    program,
                    status: output.status,
                });
            }
            let text = String::from_utf8_lossy(&output.stdout);
            first_number(&text).ok_or_else(|| SampleError::NoNumber {
                what: format!("the output of {program}: {:?}", shorten(&text)),
            })
        }
        Source::Http { url, pointer } => {
            let failed = |source| SampleError::Http {
                url: url.clone(),
                source,
            };
            let body = http
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(failed)?
                .bytes()
                .await
                .map_err(failed)?;
            let no_number = || SampleError::NoNumber {
                what: format!("{url} at {pointer:?}"),
            };
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(document) => match document.pointer(pointer) {
                    Some(serde_json::Value::Number(n)) => n.as_f64().ok_or_else(no_number),
                    Some(serde_json::Value::String(s)) => first_number(s).ok_or_else(no_number),
                    _ => Err(no_number()),
                },
                Err(_) if pointer.is_empty() => {
                    first_number(&String::from_utf8_lossy(&body)).ok_or_else(no_number)
                }
                Err(_) => Err(no_number()),
            }
        }
    }
}

/// The first decimal number in `text` (`"temp=47.2'C"` → 47.2, `"47000\n"` → 47000).
fn first_number(text: &str) -> Option<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .filter(|token| token.bytes().any(|b| b.is_ascii_digit()))
        .find_map(|token| token.parse::<f64>().ok().filter(|v| v.is_finite()))
}

fn shorten(text: &str) -> &str {
    let end = text.char_indices().nth(60).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Route {
        #[serde(default)]
        sensor: SensorConfig,
    }

    fn parse(text: &str) -> Result<SensorConfig, String> {
        toml::from_str::<Route>(text)
            .map(|r| r.sensor)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_short_form_is_a_simulated_kind_and_the_table_names_bad_fields() {
        assert_eq!(parse("").unwrap(), SensorConfig::default());
        assert_eq!(
            parse("sensor = \"humidity\"").unwrap().kind,
            SensorKind::Humidity
        );
        assert!(parse("sensor = \"wind\"").unwrap_err().contains("wind"));
        let file = parse("[sensor]\nsource = \"file\"\npath = \"/t\"\nscale = 0.001\n").unwrap();
        assert_eq!(file.source, Source::File { path: "/t".into() });
        for (text, expected) in [
            ("[sensor]\nsource = \"file\"\n", "sensor.path is needed"),
            ("[sensor]\nsource = \"gpio\"\n", "gpio"),
            (
                "[sensor]\nsource = \"file\"\npath = \"/t\"\nurl = \"http://x\"\n",
                "sensor.url does not apply",
            ),
            (
                "[sensor]\nsource = \"command\"\ncommand = []\n",
                "sensor.command must name",
            ),
            (
                "[sensor]\nsource = \"http\"\nurl = \"ftp://x\"\n",
                "sensor.url must be",
            ),
            (
                "[sensor]\nsource = \"file\"\npath = \"/t\"\nname = \"a b\"\n",
                "sensor.name",
            ),
            (
                "[sensor]\nsource = \"file\"\npath = \"/t\"\nevery_secs = 0\n",
                "every_secs",
            ),
            (
                "[sensor]\nsource = \"file\"\npath = \"/t\"\ncolour = 1\n",
                "colour",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn numbers_are_found_in_what_sensors_print() {
        assert_eq!(first_number("47000\n"), Some(47000.0));
        assert_eq!(first_number("temp=47.2'C\n"), Some(47.2));
        assert_eq!(first_number("t: -3.5e1 C"), Some(-35.0));
        assert_eq!(first_number("no reading"), None);
        assert_eq!(first_number("- . e"), None);
    }

    #[tokio::test]
    async fn a_file_sensor_scales_and_a_broken_one_refuses_until_it_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("temp");
        std::fs::write(&path, "47000\n").unwrap();
        let mut config = parse(&format!(
            "[sensor]\nsource = \"file\"\npath = {:?}\nscale = 0.001\nname = \"cpu\"\nunit = \"Cel\"\n",
            path.display().to_string()
        ))
        .unwrap();
        config.every_secs = 1;
        let sensor = SampledSensor::start(config, "dev").await;
        let pack = sensor.read(SensorKind::Temperature).unwrap();
        assert_eq!(
            (pack[0].name.as_str(), pack[0].unit.as_str()),
            ("cpu", "Cel")
        );
        assert_eq!(pack[0].value, 47.0);
        std::fs::write(&path, "unplugged\n").unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let error = sensor.read(SensorKind::Temperature).unwrap_err();
        assert!(matches!(error, SensorError::Failed(_)), "{error:?}");
        std::fs::write(&path, "21500").unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(sensor.read(SensorKind::Temperature).unwrap()[0].value, 21.5);
    }

    #[tokio::test]
    async fn a_command_sensor_reads_stdout_and_its_failures_are_typed() {
        let ok = SensorConfig {
            source: Source::Command {
                argv: vec!["sh".into(), "-c".into(), "echo temp=36.6".into()],
            },
            ..SensorConfig::default()
        };
        let pack = SampledSensor::start(ok, "dev")
            .await
            .read(SensorKind::Temperature)
            .unwrap();
        assert_eq!(
            (pack[0].value, pack[0].name.as_str()),
            (36.6, "temperature")
        );
        let failing = SensorConfig {
            source: Source::Command {
                argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
            },
            ..SensorConfig::default()
        };
        let error = SampledSensor::start(failing, "dev")
            .await
            .read(SensorKind::Temperature);
        assert!(
            matches!(&error, Err(SensorError::Failed(e)) if matches!(**e, SampleError::Exit { .. })),
            "{error:?}"
        );
        let hung = SensorConfig {
            source: Source::Command {
                argv: vec!["sleep".into(), "5".into()],
            },
            timeout_secs: 1,
            ..SensorConfig::default()
        };
        let error = SampledSensor::start(hung, "dev")
            .await
            .read(SensorKind::Temperature);
        assert!(
            matches!(&error, Err(SensorError::Failed(e)) if matches!(**e, SampleError::Timeout { .. })),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_http_sensor_follows_its_json_pointer() {
        let app = axum::Router::new().route(
            "/weather",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({ "main": { "temp": 280.5 } }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/weather", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let config = |pointer: &str| SensorConfig {
            source: Source::Http {
                url: url.clone(),
                pointer: pointer.into(),
            },
            offset: -273.15,
            ..SensorConfig::default()
        };
        let sensor = SampledSensor::start(config("/main/temp"), "dev").await;
        assert_eq!(sensor.read(SensorKind::Temperature).unwrap()[0].value, 7.35);
        let missing = SampledSensor::start(config("/main/humidity"), "dev").await;
        let error = missing.read(SensorKind::Temperature).unwrap_err();
        assert!(
            matches!(&error, SensorError::Failed(e) if matches!(**e, SampleError::NoNumber { .. })),
            "{error:?}"
        );
        server.abort();
    }
}
