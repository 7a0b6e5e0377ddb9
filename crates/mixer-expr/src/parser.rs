//! Recursive-descent parser with Go's operator precedence, bounded in source length, nesting and
//! tree depth so that no input can overflow the stack.

use crate::ast::{BinaryOp, Expr, Lit, Pos, UnaryOp};
use crate::error::CompileError;
use crate::lexer::{Lexer, Tok};

/// Longest accepted source text, in bytes.
pub const MAX_SOURCE_LEN: usize = 16 * 1024;
/// Deepest accepted syntactic nesting: parentheses, brackets, call arguments and unary operators.
pub const MAX_NESTING: u32 = 64;
/// Deepest accepted syntax tree (long operator chains count one level per operator).
pub const MAX_DEPTH: u32 = 128;

/// Parses `source` into a syntax tree (no attribute resolution, no type checking).
pub fn parse(source: &str) -> Result<Expr, CompileError> {
    if source.len() > MAX_SOURCE_LEN {
        return Err(CompileError::new(
            Pos { line: 1, column: 1 },
            format!(
                "expression is too long ({} bytes; the limit is {MAX_SOURCE_LEN})",
                source.len()
            ),
        ));
    }
    let mut lexer = Lexer::new(source);
    let mut toks = Vec::new();
    loop {
        let (t, pos) = lexer.next_token()?;
        let eof = t == Tok::Eof;
        toks.push((t, pos));
        if eof {
            break;
        }
    }
    let mut p = Parser {
        toks,
        at: 0,
        nesting: 0,
    };
    let (e, _) = p.expr()?;
    if p.cur() != &Tok::Eof {
        return Err(CompileError::new(
            p.pos(),
            format!("unexpected {} after the expression", p.cur().describe()),
        ));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    nesting: u32,
}

static EOF: (Tok, Pos) = (Tok::Eof, Pos { line: 0, column: 0 });

/// Error construction kept out of line: the recursive parsing functions must have small stack
/// frames (unoptimised builds give every temporary its own slot).
#[cold]
#[inline(never)]
fn error(pos: Pos, message: String) -> CompileError {
    CompileError::new(pos, message)
}

type Parsed = Result<(Expr, u32), CompileError>;

impl Parser {
    fn tok_at(&self, i: usize) -> &(Tok, Pos) {
        self.toks
            .get(i)
            .or_else(|| self.toks.last())
            .unwrap_or(&EOF)
    }
    fn cur(&self) -> &Tok {
        &self.tok_at(self.at).0
    }
    fn pos(&self) -> Pos {
        self.tok_at(self.at).1
    }
    fn peek(&self, n: usize) -> &Tok {
        &self.tok_at(self.at + n).0
    }
    fn advance(&mut self) {
        if self.at < self.toks.len() {
            self.at += 1;
        }
    }

    fn enter(&mut self) -> Result<(), CompileError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(error(
                self.pos(),
                format!("expression nests more than {MAX_NESTING} levels deep"),
            ));
        }
        Ok(())
    }
    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    fn deeper(&self, pos: Pos, d: u32) -> Result<u32, CompileError> {
        let d = d + 1;
        if d > MAX_DEPTH {
            return Err(error(
                pos,
                format!("expression is too deep (more than {MAX_DEPTH} nested operations)"),
            ));
        }
        Ok(d)
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), CompileError> {
        if *self.cur() == t {
            self.advance();
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    #[cold]
    #[inline(never)]
    fn unexpected(&self, what: &str) -> CompileError {
        error(
            self.pos(),
            format!("expected {what}, found {}", self.cur().describe()),
        )
    }

    fn expr(&mut self) -> Parsed {
        self.binary(1)
    }

    fn binop(&self) -> Option<BinaryOp> {
        Some(match self.cur() {
            Tok::LOr => BinaryOp::LOr,
            Tok::LAnd => BinaryOp::LAnd,
            Tok::EqEq => BinaryOp::Eq,
            Tok::NotEq => BinaryOp::Ne,
            Tok::Lt => BinaryOp::Lt,
            Tok::Le => BinaryOp::Le,
            Tok::Gt => BinaryOp::Gt,
            Tok::Ge => BinaryOp::Ge,
            Tok::Plus => BinaryOp::Add,
            Tok::Minus => BinaryOp::Sub,
            Tok::Pipe => BinaryOp::Or,
            Tok::Star => BinaryOp::Mul,
            Tok::Slash => BinaryOp::Div,
            Tok::Percent => BinaryOp::Rem,
            _ => return None,
        })
    }

    fn binary(&mut self, min_prec: u8) -> Parsed {
        let (mut lhs, mut depth) = self.unary()?;
        while let Some(op) = self.binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            let pos = self.pos();
            self.advance();
            let (rhs, rd) = self.binary(prec + 1)?;
            depth = self.deeper(pos, depth.max(rd))?;
            lhs = Expr::Binary {
                pos,
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok((lhs, depth))
    }

    fn unary(&mut self) -> Parsed {
        let pos = self.pos();
        let op = match self.cur() {
            Tok::Bang => UnaryOp::Not,
            Tok::Minus => {
                // A negative number literal (`-5`, `-9223372036854775808`) is one constant.
                let folds = !matches!(self.peek(2), Tok::LBracket | Tok::Dot | Tok::LParen);
                match self.peek(1) {
                    Tok::Int(mag) if folds => {
                        let v = if *mag <= i64::MAX as u64 {
                            -(*mag as i64)
                        } else if *mag == 1u64 << 63 {
                            i64::MIN
                        } else {
                            return Err(error(
                                pos,
                                format!("integer literal -{mag} is out of range"),
                            ));
                        };
                        self.advance();
                        self.advance();
                        return Ok((
                            Expr::Lit {
                                pos,
                                value: Lit::Int(v),
                            },
                            1,
                        ));
                    }
                    Tok::Double(d) if folds => {
                        let v = -*d;
                        self.advance();
                        self.advance();
                        return Ok((
                            Expr::Lit {
                                pos,
                                value: Lit::Double(v),
                            },
                            1,
                        ));
                    }
                    _ => UnaryOp::Neg,
                }
            }
            Tok::Plus => {
                return Err(error(
                    pos,
                    "unary `+` is not supported (ADD takes two operands)".into(),
                ));
            }
            _ => return self.postfix(),
        };
        self.advance();
        self.enter()?;
        let (operand, d) = self.unary()?;
        self.leave();
        let d = self.deeper(pos, d)?;
        Ok((
            Expr::Unary {
                pos,
                op,
                operand: Box::new(operand),
            },
            d,
        ))
    }

    fn postfix(&mut self) -> Parsed {
        let (mut e, mut depth) = self.primary()?;
        loop {
            match self.cur() {
                Tok::LBracket => {
                    let pos = self.pos();
                    self.advance();
                    self.enter()?;
                    let (key, kd) = self.expr()?;
                    self.leave();
                    self.expect(Tok::RBracket, "`]`")?;
                    depth = self.deeper(pos, depth.max(kd))?;
                    e = Expr::Index {
                        pos,
                        target: Box::new(e),
                        key: Box::new(key),
                    };
                }
                Tok::Dot => {
                    let pos = self.pos();
                    let name = match (self.peek(1), self.peek(2)) {
                        (Tok::Ident(name), Tok::LParen) => name.clone(),
                        _ => return Err(self.bad_selection(pos)),
                    };
                    self.advance();
                    self.advance();
                    let (args, ad) = self.args()?;
                    depth = self.deeper(pos, depth.max(ad))?;
                    e = Expr::Method {
                        pos,
                        target: Box::new(e),
                        name,
                        args,
                    };
                }
                _ => break,
            }
        }
        Ok((e, depth))
    }

    #[cold]
    #[inline(never)]
    fn bad_selection(&self, pos: Pos) -> CompileError {
        match self.peek(1) {
            Tok::Ident(name) => error(
                pos,
                format!(
                    "cannot select `.{name}` here: only attribute names are dotted, and only methods follow other expressions"
                ),
            ),
            t => error(
                pos,
                format!("expected a method name after `.`, found {}", t.describe()),
            ),
        }
    }

    /// `( expr, ... )`
    fn args(&mut self) -> Result<(Vec<Expr>, u32), CompileError> {
        self.expect(Tok::LParen, "`(`")?;
        self.enter()?;
        let mut args = Vec::new();
        let mut depth = 0;
        if *self.cur() != Tok::RParen {
            loop {
                let (a, d) = self.expr()?;
                depth = depth.max(d);
                args.push(a);
                if *self.cur() == Tok::Comma {
                    self.advance();
                } else {
                    break;
                }
            }
        }
        self.leave();
        self.expect(Tok::RParen, "`,` or `)`")?;
        Ok((args, depth))
    }

    fn primary(&mut self) -> Parsed {
        match self.cur() {
            Tok::Ident(_) => self.ident(),
            Tok::LParen => {
                self.advance();
                self.enter()?;
                let (e, d) = self.expr()?;
                self.leave();
                self.expect(Tok::RParen, "`)`")?;
                Ok((e, d))
            }
            _ => self.literal().map(|e| (e, 1)),
        }
    }

    #[inline(never)]
    fn literal(&mut self) -> Result<Expr, CompileError> {
        let pos = self.pos();
        let value = match self.cur() {
            Tok::Int(mag) => match i64::try_from(*mag) {
                Ok(v) => Lit::Int(v),
                Err(_) => return Err(error(pos, format!("integer literal {mag} is out of range"))),
            },
            Tok::Double(d) => Lit::Double(*d),
            Tok::Str(s) => Lit::Str(s.clone()),
            t => {
                return Err(error(
                    pos,
                    format!("expected an operand, found {}", t.describe()),
                ));
            }
        };
        self.advance();
        Ok(Expr::Lit { pos, value })
    }

    /// An attribute name, a `true`/`false` literal, or a function call.
    fn ident(&mut self) -> Parsed {
        let pos = self.pos();
        let Some(name) = self.path()? else {
            return Ok((self.bool_literal(pos), 1));
        };
        if *self.cur() == Tok::LParen && !name.contains('.') && !name.starts_with('$') {
            let (args, d) = self.args()?;
            let d = self.deeper(pos, d)?;
            return Ok((Expr::Call { pos, name, args }, d));
        }
        Ok((Expr::Ident { pos, name }, 1))
    }

    #[inline(never)]
    fn bool_literal(&mut self, pos: Pos) -> Expr {
        let value = *self.cur() == Tok::Ident("true".into());
        self.advance();
        Expr::Lit {
            pos,
            value: Lit::Bool(value),
        }
    }

    /// The dotted name starting at the current identifier (stopping before a segment that is a
    /// method call), or `None` (nothing consumed) for the literals `true` and `false`.
    #[inline(never)]
    fn path(&mut self) -> Result<Option<String>, CompileError> {
        let mut name = match self.cur() {
            Tok::Ident(first) => first.clone(),
            t => {
                return Err(error(
                    self.pos(),
                    format!("expected a name, found {}", t.describe()),
                ));
            }
        };
        if (name == "true" || name == "false") && *self.peek(1) != Tok::LParen {
            return Ok(None);
        }
        self.advance();
        while *self.cur() == Tok::Dot {
            match (self.peek(1), self.peek(2)) {
                (Tok::Ident(seg), t) if *t != Tok::LParen => {
                    if seg.starts_with('$') {
                        return Err(error(
                            self.pos(),
                            "`$` may only start an attribute name".into(),
                        ));
                    }
                    name.push('.');
                    name.push_str(seg);
                    self.advance();
                    self.advance();
                }
                _ => break,
            }
        }
        Ok(Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(src: &str) -> String {
        let e = parse(src).unwrap();
        let printed = e.to_string();
        assert_eq!(parse(&printed).unwrap(), e, "{src} -> {printed}");
        printed
    }

    #[test]
    fn precedence_is_gos() {
        assert_eq!(round_trip("as | \"a\" + \"b\""), "as | \"a\" + \"b\"");
        assert_eq!(round_trip("a || b && c == d"), "a || b && c == d");
        assert_eq!(round_trip("(a || b) && c"), "(a || b) && c");
        assert_eq!(round_trip("a - (b - c)"), "a - (b - c)");
        assert_eq!(round_trip("-5 + -(5) - --5"), "-5 + -(5) - --5");
        assert_eq!(
            round_trip("(ar | br)[\"x\"].startsWith(`y`)"),
            "(ar | br)[\"x\"].startsWith(\"y\")"
        );
        assert_eq!(
            round_trip("$out.a.b | x.y.matches('q\\n')"),
            "$out.a.b | x.y.matches(\"q\\n\")"
        );
        assert_eq!(round_trip("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(
            round_trip("1.5e300 + .5 + 0x1F + 010"),
            "1.5e300 + 0.5 + 31 + 8"
        );
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("a = 2").unwrap_err();
        assert_eq!((e.line, e.column), (1, 3), "{e}");
        let e = parse("a ==\n  @23").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(parse("\"abc").is_err());
        assert!(parse("9223372036854775808").is_err());
        assert!(parse("1e999").is_err());
        assert!(parse("+a").is_err());
        assert!(parse("a.b.c").is_ok());
        assert!(parse("(a).b").is_err());
    }

    #[test]
    fn limits() {
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nests"));
        let nots = format!("{}a", "!".repeat(10_000));
        assert!(parse(&nots).is_err());
        let chain = vec!["a"; 200].join(" | ");
        assert!(parse(&chain).unwrap_err().message.contains("deep"));
        let ok_chain = vec!["a"; 120].join(" || ");
        assert!(parse(&ok_chain).is_ok());
        assert!(parse(&"a".repeat(MAX_SOURCE_LEN + 1)).is_err());
    }
}
