//! Where readings come from: a [`SensorSource`] behind each priced route, and SenML (RFC 8428)
//! as the body of a paid reading.
//!
//! [`SimulatedSensor`] is the default source: plausible, slowly varying values with a little
//! noise, so demos and simulations have something to sell without hardware. A device plugs in its
//! real sensors by implementing [`SensorSource`].

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
    fn name_and_unit(self) -> (&'static str, &'static str) {
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
pub trait SensorSource: Send + Sync {
    /// A fresh reading of `kind` as a SenML pack.
    fn read(&self, kind: SensorKind) -> Vec<SenmlRecord>;
}

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
    fn read(&self, kind: SensorKind) -> Vec<SenmlRecord> {
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
        vec![SenmlRecord {
            base_name: Some(self.device.clone()),
            name: name.into(),
            unit: unit.into(),
            value: (value * 100.0).round() / 100.0,
            time: now.floor(),
        }]
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
            let pack = sensor.read(kind);
            let (centre, swing) = kind.simulated_range();
            assert!((pack[0].value - centre).abs() <= swing * 1.1, "{pack:?}");
            let json = serde_json::to_value(&pack).unwrap();
            assert_eq!(json[0]["bn"], "urn:dev:m2m:0xabc:");
            assert!(json[0]["t"].as_f64().unwrap() > 1.7e9);
        }
    }
}
