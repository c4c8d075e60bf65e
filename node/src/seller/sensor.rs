//! Where readings come from: a [`SensorSource`] behind each priced route, and SenML (RFC 8428)
//! as the body of a paid reading.
//!
//! [`SimulatedSensor`] is the demo default: plausible, slowly varying values with a little
//! noise, so demos and simulations have something to sell without hardware — and every reading it
//! makes says so in its SenML name (`simulated:temperature`). Real sensors are configured per
//! route ([`super::sources`]: a file, a command, an HTTP upstream) or plugged in by implementing
//! [`SensorSource`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a route measures (the simulated sensor's quantity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Air temperature, °C.
    #[default]
    Temperature,
    /// Relative humidity, %RH.
    Humidity,
    /// Barometric pressure, Pa.
    Pressure,
    /// PM2.5 particulates, µg/m³.
    AirQuality,
}

impl SensorKind {
    /// SenML name and unit (RFC 8428 §12.1 units).
    pub fn name_and_unit(self) -> (&'static str, &'static str) {
        match self {
            SensorKind::Temperature => ("temperature", "Cel"),
            SensorKind::Humidity => ("humidity", "%RH"),
            SensorKind::Pressure => ("pressure", "Pa"),
            SensorKind::AirQuality => ("pm2.5", "ug/m3"),
        }
    }

    /// Centre and swing of the simulated daily cycle.
    fn simulated_range(self) -> (f64, f64) {
        match self {
            SensorKind::Temperature => (18.0, 6.0),
            SensorKind::Humidity => (55.0, 20.0),
            SensorKind::Pressure => (101_325.0, 900.0),
            SensorKind::AirQuality => (12.0, 8.0),
        }
    }
}

/// One SenML record (the fields a single reading needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenmlRecord {
    /// Base name: the device, ending in `:` as RFC 8428 suggests for URNs.
    #[serde(rename = "bn", default, skip_serializing_if = "Option::is_none")]
    pub base_name: Option<String>,
    /// Measurement name.
    #[serde(rename = "n")]
    pub name: String,
    /// Unit.
    #[serde(rename = "u")]
    pub unit: String,
    /// Value.
    #[serde(rename = "v")]
    pub value: f64,
    /// Time (seconds since the Unix epoch).
    #[serde(rename = "t")]
    pub time: f64,
}

/// Produces readings for a route.
pub trait SensorSource: Send + Sync + std::fmt::Debug {
    /// A fresh reading as a SenML pack; `kind` is what the route measures (a source that knows
    /// its own name and unit may ignore it). An error means the buyer is answered 503 and pays
    /// nothing.
    fn read(&self, kind: SensorKind) -> Result<Vec<SenmlRecord>, SensorError>;
}

/// Why a route has no reading to sell right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SensorError {
    /// The source has not produced its first sample yet.
    #[error("the sensor has not been sampled yet")]
    NoSample,
    /// The newest good sample is too old to sell (the source keeps failing or hangs).
    #[error("the newest reading is {age_secs} s old")]
    Stale {
        /// Age of the newest good sample.
        age_secs: u64,
    },
    /// The last sample failed.
    #[error("the sensor failed")]
    Failed(#[source] Arc<SampleError>),
}

/// Why one sample of a real source failed.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started or its output read.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ended with a failure status.
    #[error("{program} exited with {status}")]
    Exit {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The upstream did not answer in time or with success.
    #[error("upstream {url}")]
    Http {
        /// The upstream.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The source answered, but not with a number where one was expected.
    #[error("no number in {what}")]
    NoNumber {
        /// What was looked at (the output's start, or the JSON pointer).
        what: String,
    },
    /// The sample took longer than the route's timeout.
    #[error("no answer within {secs} s")]
    Timeout {
        /// The timeout.
        secs: u64,
    },
}

/// What the name of every simulated reading starts with, so nobody takes one for a measurement.
pub const SIMULATED_PREFIX: &str = "simulated:";

/// A stand-in sensor: a daily cycle plus deterministic jitter.
#[derive(Debug)]
pub struct SimulatedSensor {
    device: String,
    counter: AtomicU64,
}

impl SimulatedSensor {
    /// A simulated sensor named after `device` (e.g. its EVM address).
    pub fn new(device: &str) -> Self {
        Self {
            device: format!("urn:dev:m2m:{device}:"),
            counter: AtomicU64::new(0),
        }
    }
}

impl SensorSource for SimulatedSensor {
    fn read(&self, kind: SensorKind) -> Result<Vec<SenmlRecord>, SensorError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Cheap deterministic jitter in [-0.5, 0.5): a multiplicative hash of the counter.
        let jitter =
            (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let (centre, swing) = kind.simulated_range();
        let phase = (now / 86_400.0) * std::f64::consts::TAU;
        let value = centre + swing * phase.sin() + swing * 0.05 * jitter;
        let (name, unit) = kind.name_and_unit();
        Ok(vec![SenmlRecord {
            base_name: Some(self.device.clone()),
            name: format!("{SIMULATED_PREFIX}{name}"),
            unit: unit.into(),
            value: (value * 100.0).round() / 100.0,
            time: now.floor(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_readings_are_senml_in_range() {
        let sensor = SimulatedSensor::new("0xabc");
        for kind in [
            SensorKind::Temperature,
            SensorKind::Humidity,
            SensorKind::Pressure,
            SensorKind::AirQuality,
        ] {
            let pack = sensor.read(kind).unwrap();
            assert!(pack[0].name.starts_with(SIMULATED_PREFIX), "{pack:?}");
            let (centre, swing) = kind.simulated_range();
            assert!((pack[0].value - centre).abs() <= swing * 1.1, "{pack:?}");
            let json = serde_json::to_value(&pack).unwrap();
            assert_eq!(json[0]["bn"], "urn:dev:m2m:0xabc:");
            assert!(json[0]["t"].as_f64().unwrap() > 1.7e9);
        }
    }
}
