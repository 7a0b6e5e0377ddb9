//! mutation adapter: header and body rewrites (JSON edits, templated bodies, REST to SOAP).
