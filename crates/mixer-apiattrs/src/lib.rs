//! apiattributes attribute-producing adapter: HTTP method and path templates to api.* attributes.
