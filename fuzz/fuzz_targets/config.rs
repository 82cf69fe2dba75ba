//! Config parsing (`Config::parse(text, "fuzz")`): TOML, serde with `deny_unknown_fields`,
//! validation. Properties: no panic; errors name the origin; an accepted config round-trips
//! through `to_toml` to an equal config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_tap::config::Config;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    match Config::parse(text, "fuzz") {
        Ok(c) => {
            let again = c.to_toml();
            match Config::parse(&again, "fuzz") {
                Ok(c2) => assert!(c2 == c, "config does not round-trip:\n{text}\n--\n{again}"),
                Err(e) => panic!("effective config does not parse again ({e}):\n{text}\n--\n{again}"),
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz"), "error does not name its origin: {msg}");
        }
    }
});
