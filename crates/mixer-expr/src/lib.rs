//! Mixer's attribute expression language (CEXL), compiled to bytecode at config time and
//! interpreted per request. (Being written: see issue 3.)
#![forbid(unsafe_code)]
