//! Integration tests of the HTTP adapter: the OpenAPI document's completeness.
#![forbid(unsafe_code)]

mod openapi;
