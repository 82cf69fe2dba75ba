//! Docker Engine API route matching (`match_route`, `span_name`) on arbitrary methods and
//! paths. Input: a method index byte (among the API's methods, or the raw bytes up to the
//! first space when it is 0xff) and the path. Properties: no panic; a match is a route of the
//! table for that method; each parameter is a non-empty piece of the path; the span name is
//! the method and the template, never the raw path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_tap::schema::docker;

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD"];

fuzz_target!(|input: &[u8]| {
    let Some((&m, rest)) = input.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (method, path) = if m == 0xff {
        text.split_once(' ').unwrap_or((&text, ""))
    } else {
        (METHODS[usize::from(m) % METHODS.len()], &text[..])
    };
    let found = docker::match_route(method, path);
    let name = docker::span_name(method, path);
    match found {
        Some(r) => {
            assert!(
                docker::routes().any(|(rm, rp)| rm == method && rp == r.route),
                "{method} {} is not in the table",
                r.route
            );
            assert_eq!(name, format!("{method} {}", r.route));
            let bare = path.split_once('?').map_or(path, |(p, _)| p);
            for (k, v) in r.params.iter() {
                assert!(!v.is_empty(), "empty param {k}");
                assert!(bare.contains(v), "param {k}={v:?} not in the path");
                assert!(r.route.contains(&format!("{{{k}}}")), "param {k} not in {}", r.route);
            }
            if let Some(v) = r.api_version {
                assert!(
                    bare.starts_with(&format!("/v{v}/")),
                    "api version {v:?} not the path prefix"
                );
            }
        }
        None => assert_eq!(name, method),
    }
});
