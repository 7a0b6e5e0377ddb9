//! Tokens with positions. Go's lexical rules where Mixer relied on them (Mixer parsed expressions
//! with Go's parser): interpreted and raw string literals, Go integer and float literals.

use crate::ast::Pos;
use crate::error::CompileError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// An identifier segment (may start with `$`).
    Ident(String),
    /// An integer literal's magnitude (the sign is a separate token).
    Int(u64),
    Double(f64),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    LOr,
    LAnd,
    Pipe,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Int(i) => format!("integer {i}"),
            Tok::Double(d) => format!("number {d}"),
            Tok::Str(_) => "string literal".to_string(),
            Tok::Eof => "end of expression".to_string(),
            t => format!("`{}`", t.punct()),
        }
    }

    fn punct(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::LOr => "||",
            Tok::LAnd => "&&",
            Tok::Pipe => "|",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Bang => "!",
            _ => "?",
        }
    }
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    off: usize,
    line: u32,
    column: u32,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Lexer<'a> {
        Lexer {
            src,
            off: 0,
            line: 1,
            column: 1,
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.off..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.off..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.off += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    /// The next token and where it starts.
    pub(crate) fn next_token(&mut self) -> Result<(Tok, Pos), CompileError> {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
        let pos = self.pos();
        let Some(c) = self.bump() else {
            return Ok((Tok::Eof, pos));
        };
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '%' => Tok::Percent,
            '|' => {
                if self.peek() == Some('|') {
                    self.bump();
                    Tok::LOr
                } else {
                    Tok::Pipe
                }
            }
            '&' => {
                if self.peek() == Some('&') {
                    self.bump();
                    Tok::LAnd
                } else {
                    return Err(CompileError::new(pos, "expected `&&`, found `&`"));
                }
            }
            '=' => {
                if self.peek() == Some('=') {
                    self.bump();
                    Tok::EqEq
                } else {
                    return Err(CompileError::new(pos, "expected `==`, found `=`"));
                }
            }
            '!' => {
                if self.peek() == Some('=') {
                    self.bump();
                    Tok::NotEq
                } else {
                    Tok::Bang
                }
            }
            '<' => {
                if self.peek() == Some('=') {
                    self.bump();
                    Tok::Le
                } else {
                    Tok::Lt
                }
            }
            '>' => {
                if self.peek() == Some('=') {
                    self.bump();
                    Tok::Ge
                } else {
                    Tok::Gt
                }
            }
            '.' => {
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return self.number(pos, self.off - 1).map(|t| (t, pos));
                }
                Tok::Dot
            }
            '"' | '\'' => Tok::Str(self.string(pos, c)?),
            '`' => Tok::Str(self.raw_string(pos)?),
            '$' => {
                if !self.peek().is_some_and(is_ident_start) {
                    return Err(CompileError::new(pos, "`$` must start an attribute name"));
                }
                Tok::Ident(self.ident(self.off - 1))
            }
            c if c.is_ascii_digit() => return self.number(pos, self.off - 1).map(|t| (t, pos)),
            c if is_ident_start(c) => Tok::Ident(self.ident(self.off - c.len_utf8())),
            c => {
                return Err(CompileError::new(
                    pos,
                    format!("illegal character U+{:04X} {c:?}", c as u32),
                ));
            }
        };
        Ok((tok, pos))
    }

    fn ident(&mut self, start: usize) -> String {
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        self.src[start..self.off].to_string()
    }

    fn number(&mut self, pos: Pos, start: usize) -> Result<Tok, CompileError> {
        let first = self.src[start..].chars().next();
        // Hex, octal, binary integers.
        if first == Some('0')
            && self.off == start + 1
            && let Some(p) = self.peek()
        {
            {
                let radix = match p {
                    'x' | 'X' => 16,
                    'o' | 'O' => 8,
                    'b' | 'B' => 2,
                    _ => 0,
                };
                if radix != 0 {
                    self.bump();
                    let digits_start = self.off;
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        self.bump();
                    }
                    let digits: String = self.src[digits_start..self.off]
                        .chars()
                        .filter(|c| *c != '_')
                        .collect();
                    return u64::from_str_radix(&digits, radix)
                        .map(Tok::Int)
                        .map_err(|_| {
                            CompileError::new(
                                pos,
                                format!(
                                    "invalid or out-of-range integer literal `{}`",
                                    &self.src[start..self.off]
                                ),
                            )
                        });
                }
            }
        }
        let mut is_float = first == Some('.');
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
            self.bump();
        }
        if !is_float && self.peek() == Some('.') && self.peek2().is_some_and(|c| c.is_ascii_digit())
        {
            is_float = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let save = (self.off, self.line, self.column);
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                is_float = true;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
            } else {
                (self.off, self.line, self.column) = save;
            }
        }
        if self.peek().is_some_and(is_ident_char) {
            let bad_end = self.src[self.off..]
                .char_indices()
                .find(|(_, c)| !is_ident_char(*c))
                .map_or(self.src.len(), |(i, _)| self.off + i);
            return Err(CompileError::new(
                pos,
                format!("invalid number literal `{}`", &self.src[start..bad_end]),
            ));
        }
        let text: String = self.src[start..self.off]
            .chars()
            .filter(|c| *c != '_')
            .collect();
        if is_float {
            match text.parse::<f64>() {
                Ok(d) if d.is_finite() => Ok(Tok::Double(d)),
                _ => Err(CompileError::new(
                    pos,
                    format!("floating-point literal `{text}` is out of range"),
                )),
            }
        } else if text.len() > 1 && text.starts_with('0') {
            // Go: a leading 0 means octal.
            u64::from_str_radix(&text[1..], 8)
                .map(Tok::Int)
                .map_err(|_| {
                    CompileError::new(
                        pos,
                        format!("invalid or out-of-range octal literal `{text}`"),
                    )
                })
        } else {
            text.parse::<u64>().map(Tok::Int).map_err(|_| {
                CompileError::new(pos, format!("integer literal `{text}` is out of range"))
            })
        }
    }

    fn raw_string(&mut self, pos: Pos) -> Result<String, CompileError> {
        let start = self.off;
        loop {
            match self.bump() {
                None => return Err(CompileError::new(pos, "raw string literal not terminated")),
                Some('`') => break,
                Some(_) => {}
            }
        }
        // Go drops carriage returns from raw strings.
        Ok(self.src[start..self.off - 1].replace('\r', ""))
    }

    fn string(&mut self, pos: Pos, quote: char) -> Result<String, CompileError> {
        let mut out = String::new();
        loop {
            let here = self.pos();
            match self.bump() {
                None | Some('\n') => {
                    return Err(CompileError::new(pos, "string literal not terminated"));
                }
                Some(c) if c == quote => return Ok(out),
                Some('\\') => {
                    let Some(e) = self.bump() else {
                        return Err(CompileError::new(pos, "string literal not terminated"));
                    };
                    let c = match e {
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\x0b',
                        '\\' => '\\',
                        '"' => '"',
                        '\'' => '\'',
                        'x' => self.hex_escape(here, 2)?,
                        'u' => self.hex_escape(here, 4)?,
                        'U' => self.hex_escape(here, 8)?,
                        '0'..='7' => {
                            let mut v = e as u32 - '0' as u32;
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ '0'..='7') => {
                                        self.bump();
                                        v = v * 8 + (d as u32 - '0' as u32);
                                    }
                                    _ => {
                                        return Err(CompileError::new(
                                            here,
                                            "octal escape needs 3 digits",
                                        ));
                                    }
                                }
                            }
                            byte_char(here, v)?
                        }
                        other => {
                            return Err(CompileError::new(
                                here,
                                format!("unknown escape sequence `\\{other}`"),
                            ));
                        }
                    };
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex_escape(&mut self, here: Pos, n: usize) -> Result<char, CompileError> {
        let mut v: u32 = 0;
        for _ in 0..n {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    self.bump();
                    v = v * 16 + d;
                }
                None => {
                    return Err(CompileError::new(
                        here,
                        format!("escape needs {n} hex digits"),
                    ));
                }
            }
        }
        if n == 2 {
            byte_char(here, v)
        } else {
            char::from_u32(v).ok_or_else(|| {
                CompileError::new(
                    here,
                    format!("escape is not a valid Unicode code point: {v:#x}"),
                )
            })
        }
    }
}

/// `\xhh` and octal escapes are bytes in Go; only ASCII keeps the string valid UTF-8.
fn byte_char(here: Pos, v: u32) -> Result<char, CompileError> {
    if v < 0x80 {
        char::from_u32(v).ok_or_else(|| CompileError::new(here, "invalid escape"))
    } else {
        Err(CompileError::new(
            here,
            format!("byte escape {v:#x} is not ASCII (strings must be valid UTF-8; use \\u)"),
        ))
    }
}
