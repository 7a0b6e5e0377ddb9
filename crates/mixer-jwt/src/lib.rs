//! jwt attribute-producing adapter: verified JSON Web Tokens to request.auth.* attributes.
