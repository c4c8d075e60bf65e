//! Printing: plain text or JSON on stdout, and QR codes for the terminal.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub(super) fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode output as JSON: {e}"),
    }
}

/// Prints `value` as one line of JSON on stdout (a stream of events, one per line).
pub(super) fn print_json_line<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode output as JSON: {e}"),
    }
}

/// Renders `data` as a QR code in half-height block characters, colours inverted (dark modules
/// printed as blanks) so it scans on the usual light-on-dark terminal.
pub(super) fn qr_code(data: &str) -> Option<String> {
    let code = QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}
