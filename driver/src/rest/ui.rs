//! The console: `GET /ui/`, a page served by every replica that shows the cluster live and
//! browses the keys (docs/console.md). Its three files are compiled in (no build step, nothing
//! fetched from elsewhere at run time); the page calls only the public REST API of the replica
//! that served it (`/v1/cluster/status`, `/metrics`, `/v1/kv`, `/v1/watch`), with the bearer
//! token the user types when the replica asks for one. The files themselves hold no data, so
//! they are served without a token.

use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Method, StatusCode};

const FILES: &[(&str, &str, &str)] = &[
    ("/ui/", "text/html; charset=utf-8", include_str!("ui/index.html")),
    ("/ui/app.js", "text/javascript; charset=utf-8", include_str!("ui/app.js")),
    ("/ui/style.css", "text/css; charset=utf-8", include_str!("ui/style.css")),
];

/// Marks the console's answers: they carry no `X-Synod-Index` (they are served without a token).
#[derive(Clone, Copy, Debug)]
pub struct Static;

/// Whether `path` is the console's.
pub fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The console's answer to `method path` (a path [`is_ui`] accepts).
pub fn serve(method: &Method, path: &str) -> Response {
    let mut r = answer(method, path);
    r.extensions_mut().insert(Static);
    r
}

fn answer(method: &Method, path: &str) -> Response {
    if *method != Method::GET && *method != Method::HEAD {
        let mut r = super::problem::Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "the console is GET only").into_response();
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/ui" {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut().insert(LOCATION, HeaderValue::from_static("/ui/"));
        return r;
    }
    let Some((_, ctype, text)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return super::problem::Problem::new(StatusCode::NOT_FOUND, "no-route", "No such endpoint", format!("the console has no {path}")).into_response();
    };
    let mut r = Response::new(if *method == Method::HEAD { Body::empty() } else { Body::from(*text) });
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only this replica's own files and API: no inline script, no other origin.
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_served_and_nothing_else() {
        assert_eq!(serve(&Method::GET, "/ui").status(), StatusCode::PERMANENT_REDIRECT);
        for (p, ctype, _) in FILES {
            let r = serve(&Method::GET, p);
            assert_eq!(r.status(), StatusCode::OK, "{p}");
            assert_eq!(r.headers()[CONTENT_TYPE], *ctype);
        }
        assert_eq!(serve(&Method::GET, "/ui/../v1/status").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve(&Method::POST, "/ui/").status(), StatusCode::METHOD_NOT_ALLOWED);
        // The page loads only its own files (the CSP forbids the rest).
        let html = FILES[0].2;
        assert!(html.contains("src=\"app.js\"") && html.contains("href=\"style.css\"") && !html.contains("http"));
    }
}
