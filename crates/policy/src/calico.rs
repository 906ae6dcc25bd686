//! Calico's selector language (`projectcalico.org/v3` `selector` and
//! `namespaceSelector`): a small tokenizer and a recursive-descent parser
//! into [`Selector`], an AST that evaluates against a set of labels.
//!
//! Grammar, loosest binding first (both binary operators left-associative):
//!
//! ```text
//! selector   := <empty> | or
//! or         := and ( "||" and )*
//! and        := unary ( "&&" unary )*
//! unary      := "!" unary | "(" or ")" | "all" "(" ")" | "has" "(" key ")" | comparison
//! comparison := key ( "==" str | "!=" str | "in" set | "not" "in" set
//!                   | "starts" "with" str | "ends" "with" str | "contains" str )
//! set        := "{" [ str ( "," str )* ] "}"
//! str        := '"' any but '"' '"' | "'" any but "'" "'"
//! key        := one or more of A-Z a-z 0-9 / . - _
//! ```
//!
//! Words such as `in` or `all` are keywords only where the grammar expects
//! them, so `all == "x"` compares a label named `all`. Strings have no
//! escapes (label values cannot hold quotes anyway).
//!
//! Input is bounded ([`MAX_LEN`] bytes, [`MAX_DEPTH`] levels of `(` and `!`)
//! because selectors come from anyone who may create a policy, and the
//! parser recurses.

use crate::Labels;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::{collections::BTreeSet, fmt, str::FromStr};

/// The longest selector accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// The deepest nesting of `(` and `!` accepted.
pub const MAX_DEPTH: usize = 64;

/// A parsed Calico selector. Sets are ordered and deduplicated, so
/// selectors that differ only in set order or duplicates are equal (and
/// hash alike, which matters when caching what a selector matches).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `all()`: every set of labels.
    All,
    /// `has(k)`: label `k` is present, whatever its value.
    Has(String),
    /// `k == "v"`.
    Equal(String, String),
    /// `k != "v"`: also true when `k` is absent.
    NotEqual(String, String),
    /// `k in {"a", "b"}`.
    In(String, BTreeSet<String>),
    /// `k not in {"a", "b"}`: also true when `k` is absent.
    NotIn(String, BTreeSet<String>),
    /// `k starts with "p"`.
    StartsWith(String, String),
    /// `k ends with "s"`.
    EndsWith(String, String),
    /// `k contains "s"`.
    Contains(String, String),
    /// `!e`.
    Not(Box<Selector>),
    /// `a && b`.
    And(Box<Selector>, Box<Selector>),
    /// `a || b`.
    Or(Box<Selector>, Box<Selector>),
}

/// Why a selector does not parse: the byte offset in the input where the
/// problem was seen, and what was expected and found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub reason: String,
}

impl Selector {
    /// Parses a selector; the empty (or blank) string is `all()`.
    pub fn parse(src: &str) -> Result<Selector, ParseError> {
        if src.len() > MAX_LEN {
            let reason = format!("the selector is {} bytes long; at most {MAX_LEN} are allowed", src.len());
            return Err(ParseError { offset: MAX_LEN, reason });
        }
        let mut parser = Parser { tokens: tokenize(src)?, pos: 0, depth: 0 };
        if parser.peek().kind == Kind::End {
            return Ok(Selector::All);
        }
        let selector = parser.or()?;
        let next = parser.peek();
        if next.kind != Kind::End {
            return Err(expected("'&&', '||' or the end of the selector", next));
        }
        Ok(selector)
    }

    /// Whether an object with these labels is selected. Comparisons on an
    /// absent label are false, except the negative ones (`!=`, `not in`),
    /// which are true: "not equal to v" holds for a label that is not there.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = |key: &String| labels.get(key).map(String::as_str);
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Equal(k, v) => value(k) == Some(v),
            Selector::NotEqual(k, v) => value(k) != Some(v),
            Selector::In(k, set) => value(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => value(k).is_none_or(|v| !set.contains(v)),
            Selector::StartsWith(k, prefix) => value(k).is_some_and(|v| v.starts_with(prefix.as_str())),
            Selector::EndsWith(k, suffix) => value(k).is_some_and(|v| v.ends_with(suffix.as_str())),
            Selector::Contains(k, part) => value(k).is_some_and(|v| v.contains(part.as_str())),
            Selector::Not(inner) => !inner.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }

    /// How tightly the printed form binds: operands that bind looser than
    /// their position needs get parentheses.
    fn binding(&self) -> u8 {
        match self {
            Selector::Or(..) => 0,
            Selector::And(..) => 1,
            _ => 2,
        }
    }
}

/// `all()`, which is also what an absent or empty selector means.
impl Default for Selector {
    fn default() -> Self {
        Selector::All
    }
}

/// As the canonical string ([`fmt::Display`]).
impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// From a string, with [`Selector::parse`]; a parse error becomes a serde
/// error that quotes the selector and gives the offset and the reason.
impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SelectorVisitor)
    }
}

struct SelectorVisitor;

impl de::Visitor<'_> for SelectorVisitor {
    type Value = Selector;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Calico selector string")
    }

    fn visit_str<E: de::Error>(self, src: &str) -> Result<Selector, E> {
        Selector::parse(src).map_err(|e| {
            E::custom(format_args!("invalid selector {} at offset {}: {}", shown(src), e.offset, e.reason))
        })
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

/// The canonical form: single spaces around operators, double quotes
/// (single ones for a value holding a double quote), sets sorted, and
/// parentheses only where precedence needs them. It parses back to an
/// equal selector, except for a value holding both kinds of quote, which
/// no selector text can express.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Equal(k, v) => write!(f, "{k} == {}", Quoted(v)),
            Selector::NotEqual(k, v) => write!(f, "{k} != {}", Quoted(v)),
            Selector::In(k, set) => write!(f, "{k} in {}", Set(set)),
            Selector::NotIn(k, set) => write!(f, "{k} not in {}", Set(set)),
            Selector::StartsWith(k, v) => write!(f, "{k} starts with {}", Quoted(v)),
            Selector::EndsWith(k, v) => write!(f, "{k} ends with {}", Quoted(v)),
            Selector::Contains(k, v) => write!(f, "{k} contains {}", Quoted(v)),
            Selector::Not(inner) => {
                f.write_str("!")?;
                operand(f, inner, 2)
            }
            // Left-associative: the left operand may be the same operator
            // unparenthesized, the right one may not.
            Selector::And(a, b) => {
                operand(f, a, 1)?;
                f.write_str(" && ")?;
                operand(f, b, 2)
            }
            Selector::Or(a, b) => {
                operand(f, a, 0)?;
                f.write_str(" || ")?;
                operand(f, b, 1)
            }
        }
    }
}

/// Writes `s`, in parentheses when it binds looser than `needed`.
fn operand(f: &mut fmt::Formatter<'_>, s: &Selector, needed: u8) -> fmt::Result {
    if s.binding() < needed { write!(f, "({s})") } else { write!(f, "{s}") }
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.0.contains('"') { '\'' } else { '"' };
        write!(f, "{quote}{}{quote}", self.0)
    }
}

struct Set<'a>(&'a BTreeSet<String>);

impl fmt::Display for Set<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Quoted(v))?;
        }
        f.write_str("}")
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for ParseError {}

// ---- Tokenizer ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    /// A run of key characters: a label key, or a keyword where the
    /// grammar wants one.
    Word(&'a str),
    /// A quoted string, without its quotes.
    Str(&'a str),
    EqEq,
    NotEq,
    Bang,
    AndAnd,
    OrOr,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    /// Byte offset in the input.
    at: usize,
    kind: Kind<'a>,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_')
}

/// Splits the whole input up front (it is at most [`MAX_LEN`] bytes), so
/// the parser can look ahead freely. The last token is always `End`.
fn tokenize(src: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        if b.is_ascii_whitespace() {
            at += 1;
            continue;
        }
        let next = bytes.get(at + 1).copied();
        let (kind, len) = match b {
            b'"' | b'\'' => quoted_string(src, at)?,
            b'(' => (Kind::LParen, 1),
            b')' => (Kind::RParen, 1),
            b'{' => (Kind::LBrace, 1),
            b'}' => (Kind::RBrace, 1),
            b',' => (Kind::Comma, 1),
            b'!' if next == Some(b'=') => (Kind::NotEq, 2),
            b'!' => (Kind::Bang, 1),
            b'=' => doubled(src, at, Kind::EqEq)?,
            b'&' => doubled(src, at, Kind::AndAnd)?,
            b'|' => doubled(src, at, Kind::OrOr)?,
            _ if is_key_byte(b) => {
                let len = bytes[at..].iter().take_while(|&&b| is_key_byte(b)).count();
                (Kind::Word(&src[at..at + len]), len)
            }
            _ => return Err(unexpected_char(src, at)),
        };
        tokens.push(Token { at, kind });
        at += len;
    }
    tokens.push(Token { at: src.len(), kind: Kind::End });
    Ok(tokens)
}

/// A string from the quote at `at` to the next quote of the same kind. Both
/// quotes are ASCII, so byte offsets stay on character boundaries.
fn quoted_string(src: &str, at: usize) -> Result<(Kind<'_>, usize), ParseError> {
    let quote = src.as_bytes()[at];
    let body = &src[at + 1..];
    match body.bytes().position(|b| b == quote) {
        Some(end) => Ok((Kind::Str(&body[..end]), end + 2)),
        None => {
            let kind = if quote == b'"' { "double" } else { "single" };
            Err(ParseError { offset: at, reason: format!("unterminated string: no closing {kind} quote") })
        }
    }
}

/// `==`, `&&` and `||`: the operator character must come twice.
fn doubled(src: &str, at: usize, kind: Kind<'static>) -> Result<(Kind<'static>, usize), ParseError> {
    let c = src.as_bytes()[at];
    if src.as_bytes().get(at + 1) == Some(&c) {
        return Ok((kind, 2));
    }
    let c = char::from(c);
    Err(ParseError { offset: at, reason: format!("expected '{c}{c}', found a single '{c}'") })
}

fn unexpected_char(src: &str, at: usize) -> ParseError {
    let c = src[at..].chars().next().unwrap_or('\0');
    ParseError {
        offset: at,
        reason: format!(
            "unexpected character {c:?}; label keys are made of letters, digits, '/', '.', '-' and '_'"
        ),
    }
}

// ---- Parser ----

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    /// Index of the next token; never past the final `End`.
    pos: usize,
    /// Current nesting of `(` and `!`, bounded by [`MAX_DEPTH`].
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        // `pos` stays on `End` once there, and `End` is always present.
        self.tokens.get(self.pos).or(self.tokens.last()).copied().unwrap_or(Token { at: 0, kind: Kind::End })
    }

    fn bump(&mut self) -> Token<'a> {
        let token = self.peek();
        if token.kind != Kind::End {
            self.pos += 1;
        }
        token
    }

    fn eat(&mut self, kind: Kind<'_>) -> bool {
        let hit = self.peek().kind == kind;
        if hit {
            self.bump();
        }
        hit
    }

    fn expect(&mut self, kind: Kind<'_>, what: &str) -> Result<(), ParseError> {
        let token = self.bump();
        if token.kind == kind { Ok(()) } else { Err(expected(what, token)) }
    }

    fn or(&mut self) -> Result<Selector, ParseError> {
        let mut left = self.and()?;
        while self.eat(Kind::OrOr) {
            let right = self.and()?;
            left = Selector::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, ParseError> {
        let mut left = self.unary()?;
        while self.eat(Kind::AndAnd) {
            let right = self.unary()?;
            left = Selector::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, ParseError> {
        let token = self.peek();
        match token.kind {
            Kind::Bang => {
                self.enter(token)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Selector::Not(Box::new(inner)))
            }
            Kind::LParen => {
                self.enter(token)?;
                let inner = self.or()?;
                let close = format!("')' to close the '(' at {}", token.at);
                self.expect(Kind::RParen, &close)?;
                self.depth -= 1;
                Ok(inner)
            }
            Kind::Word(word) => {
                self.bump();
                self.term(word, token.at)
            }
            _ => Err(expected("a selector term (a comparison, all(), has(key), '!' or '(')", token)),
        }
    }

    /// Consumes a `(` or `!` one level deeper, refusing to go past
    /// [`MAX_DEPTH`] so hostile input cannot exhaust the stack.
    fn enter(&mut self, token: Token<'_>) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(ParseError {
                offset: token.at,
                reason: format!("the selector nests '(' and '!' deeper than {MAX_DEPTH} levels"),
            });
        }
        self.depth += 1;
        self.bump();
        Ok(())
    }

    /// After a word: a function call if `(` follows, else a comparison
    /// with the word as the label key.
    fn term(&mut self, word: &str, at: usize) -> Result<Selector, ParseError> {
        if self.peek().kind != Kind::LParen {
            return self.comparison(word);
        }
        self.bump();
        match word {
            "all" => {
                self.expect(Kind::RParen, "')' after 'all(' (all() takes no argument)")?;
                Ok(Selector::All)
            }
            "has" => {
                let key = self.bump();
                let Kind::Word(key) = key.kind else {
                    return Err(expected("a label key after 'has('", key));
                };
                self.expect(Kind::RParen, "')' after the key in has(...)")?;
                Ok(Selector::Has(key.to_string()))
            }
            _ => Err(ParseError {
                offset: at,
                reason: format!(
                    "unknown function {}; the functions are all() and has(key)",
                    shown(&format!("{word}()"))
                ),
            }),
        }
    }

    fn comparison(&mut self, key: &str) -> Result<Selector, ParseError> {
        let k = key.to_string();
        let op = self.bump();
        Ok(match op.kind {
            Kind::EqEq => Selector::Equal(k, self.string("'=='")?),
            Kind::NotEq => Selector::NotEqual(k, self.string("'!='")?),
            Kind::Word("in") => Selector::In(k, self.set("'in'")?),
            Kind::Word("not") => {
                self.keyword("in", "'not'")?;
                Selector::NotIn(k, self.set("'not in'")?)
            }
            Kind::Word("starts") => {
                self.keyword("with", "'starts'")?;
                Selector::StartsWith(k, self.string("'starts with'")?)
            }
            Kind::Word("ends") => {
                self.keyword("with", "'ends'")?;
                Selector::EndsWith(k, self.string("'ends with'")?)
            }
            Kind::Word("contains") => Selector::Contains(k, self.string("'contains'")?),
            _ => {
                let what = format!(
                    "an operator (==, !=, in, not in, starts with, ends with, contains) after {}",
                    shown(key)
                );
                return Err(expected(&what, op));
            }
        })
    }

    fn keyword(&mut self, word: &str, after: &str) -> Result<(), ParseError> {
        let token = self.bump();
        if token.kind == Kind::Word(word) {
            Ok(())
        } else {
            Err(expected(&format!("'{word}' after {after}"), token))
        }
    }

    fn string(&mut self, after: &str) -> Result<String, ParseError> {
        let token = self.bump();
        match token.kind {
            Kind::Str(s) => Ok(s.to_string()),
            _ => Err(expected(&format!("a quoted string after {after}"), token)),
        }
    }

    /// `{` [ str ( `,` str )* ] `}`; an empty set is allowed (`in {}`
    /// never holds, `not in {}` always does).
    fn set(&mut self, after: &str) -> Result<BTreeSet<String>, ParseError> {
        self.expect(Kind::LBrace, &format!("'{{' after {after}"))?;
        let mut values = BTreeSet::new();
        if self.eat(Kind::RBrace) {
            return Ok(values);
        }
        loop {
            values.insert(self.string("'{' or ','")?);
            let token = self.bump();
            match token.kind {
                Kind::Comma => continue,
                Kind::RBrace => return Ok(values),
                _ => return Err(expected("',' or '}' in the set", token)),
            }
        }
    }
}

/// "expected {what}, found {token}", at the token.
fn expected(what: &str, token: Token<'_>) -> ParseError {
    ParseError { offset: token.at, reason: format!("expected {what}, found {}", describe(token.kind)) }
}

fn describe(kind: Kind<'_>) -> String {
    match kind {
        Kind::Word(w) => shown(w),
        Kind::Str(s) => format!("the string {}", shown(s)),
        Kind::EqEq => "'=='".into(),
        Kind::NotEq => "'!='".into(),
        Kind::Bang => "'!'".into(),
        Kind::AndAnd => "'&&'".into(),
        Kind::OrOr => "'||'".into(),
        Kind::LParen => "'('".into(),
        Kind::RParen => "')'".into(),
        Kind::LBrace => "'{'".into(),
        Kind::RBrace => "'}'".into(),
        Kind::Comma => "','".into(),
        Kind::End => "the end of the selector".into(),
    }
}

/// Input text for an error message: in single quotes, cut to 40 characters.
fn shown(s: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("'{}…'", &s[..cut]),
        None => format!("'{s}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(s: &str) -> Selector {
        match Selector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?} does not parse: {e}"),
        }
    }

    fn error(s: &str) -> ParseError {
        match Selector::parse(s) {
            Ok(sel) => panic!("{s:?} should not parse, got {sel:?}"),
            Err(e) => e,
        }
    }

    fn eq(k: &str, v: &str) -> Selector {
        Selector::Equal(k.into(), v.into())
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn and(a: Selector, b: Selector) -> Selector {
        Selector::And(Box::new(a), Box::new(b))
    }

    fn or(a: Selector, b: Selector) -> Selector {
        Selector::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Selector) -> Selector {
        Selector::Not(Box::new(a))
    }

    #[test]
    fn every_operator_parses() {
        assert_eq!(parse("all()"), Selector::All);
        assert_eq!(parse("has(app)"), Selector::Has("app".into()));
        assert_eq!(parse("app == \"web\""), eq("app", "web"));
        assert_eq!(parse("app != \"web\""), Selector::NotEqual("app".into(), "web".into()));
        assert_eq!(parse("app in {\"a\", \"b\"}"), Selector::In("app".into(), set(&["a", "b"])));
        assert_eq!(parse("app not in {\"a\", \"b\"}"), Selector::NotIn("app".into(), set(&["a", "b"])));
        assert_eq!(parse("app starts with \"x\""), Selector::StartsWith("app".into(), "x".into()));
        assert_eq!(parse("app ends with \"x\""), Selector::EndsWith("app".into(), "x".into()));
        assert_eq!(parse("app contains \"x\""), Selector::Contains("app".into(), "x".into()));
        assert_eq!(parse("!has(app)"), not(Selector::Has("app".into())));
        assert_eq!(parse("has(a) && has(b)"), and(Selector::Has("a".into()), Selector::Has("b".into())));
        assert_eq!(parse("has(a) || has(b)"), or(Selector::Has("a".into()), Selector::Has("b".into())));
        assert_eq!(parse("(has(a))"), Selector::Has("a".into()));
    }

    #[test]
    fn empty_and_blank_select_all() {
        for s in ["", " ", "\t\n  \r"] {
            assert_eq!(parse(s), Selector::All, "{s:?}");
        }
        assert!(parse("").matches(&labels(&[])));
    }

    #[test]
    fn keys_may_hold_key_punctuation() {
        let key = "projectcalico.org/name-space_1.x";
        assert_eq!(parse(&format!("{key} == 'a'")), eq(key, "a"));
        assert_eq!(parse(&format!("has({key})")), Selector::Has(key.into()));
        // Keywords are keywords only where an operator or function is expected.
        assert_eq!(parse("all == 'x'"), eq("all", "x"));
        assert_eq!(parse("in in {'in'}"), Selector::In("in".into(), set(&["in"])));
        assert_eq!(parse("has(has)"), Selector::Has("has".into()));
        assert_eq!(parse("not not in {}"), Selector::NotIn("not".into(), set(&[])));
    }

    #[test]
    fn both_quotes_and_any_content() {
        assert_eq!(parse("a == 'x'"), parse("a == \"x\""));
        assert_eq!(parse("a == 'say \"hi\"'"), eq("a", "say \"hi\""));
        assert_eq!(parse("a == \"it's\""), eq("a", "it's"));
        assert_eq!(parse("a == ''"), eq("a", ""));
        assert_eq!(parse("a == 'x && y || (z)'"), eq("a", "x && y || (z)"));
        assert_eq!(parse("a == 'héllo wörld'"), eq("a", "héllo wörld"));
        assert_eq!(parse("a in {'x', \"y\"}"), Selector::In("a".into(), set(&["x", "y"])));
    }

    #[test]
    fn whitespace_is_optional_and_free() {
        let expected = parse("a == \"1\" && !(b in {\"x\", \"y\"} || has(c))");
        for s in [
            "a==\"1\"&&!(b in{\"x\",\"y\"}||has(c))",
            "  a  ==  \"1\"\n&&\t! ( b  in  { \"x\" , \"y\" }  ||  has ( c ) )  ",
        ] {
            assert_eq!(parse(s), expected, "{s:?}");
        }
        // Words still need separating from each other.
        assert!(Selector::parse("a notin {}").is_err());
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let (a, b, c) = (eq("a", "1"), eq("b", "2"), eq("c", "3"));
        let expected = or(a.clone(), and(b.clone(), c.clone()));
        assert_eq!(parse("a == \"1\" || b == \"2\" && c == \"3\""), expected);
        assert_eq!(parse("a == \"1\" && b == \"2\" || c == \"3\""), or(and(a.clone(), b.clone()), c.clone()));
        assert_eq!(
            parse("(a == \"1\" || b == \"2\") && c == \"3\""),
            and(or(a.clone(), b.clone()), c.clone())
        );
        // The difference shows in evaluation: only a=1 present.
        let only_a = labels(&[("a", "1")]);
        assert!(parse("a == \"1\" || b == \"2\" && c == \"3\"").matches(&only_a));
        assert!(!parse("(a == \"1\" || b == \"2\") && c == \"3\"").matches(&only_a));
    }

    #[test]
    fn binary_operators_are_left_associative() {
        let (a, b, c) = (Selector::Has("a".into()), Selector::Has("b".into()), Selector::Has("c".into()));
        assert_eq!(parse("has(a) && has(b) && has(c)"), and(and(a.clone(), b.clone()), c.clone()));
        assert_eq!(parse("has(a) || has(b) || has(c)"), or(or(a.clone(), b.clone()), c.clone()));
        assert_eq!(parse("has(a) && (has(b) && has(c))"), and(a, and(b, c)));
    }

    #[test]
    fn not_binds_tightest() {
        let (a, b) = (Selector::Has("a".into()), Selector::Has("b".into()));
        assert_eq!(parse("!has(a) && has(b)"), and(not(a.clone()), b.clone()));
        assert_eq!(parse("!has(a) || has(b)"), or(not(a.clone()), b.clone()));
        assert_eq!(parse("!(has(a) || has(b))"), not(or(a.clone(), b.clone())));
        assert_eq!(parse("!!has(a)"), not(not(a.clone())));
        // `!` applies to the whole comparison, not to the key.
        assert_eq!(parse("!a == 'x'"), not(eq("a", "x")));
    }

    #[test]
    fn negated_groups_evaluate() {
        let s = parse("!(has(a) || b == 'x')");
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("b", "y")])));
        assert!(!s.matches(&labels(&[("a", "")])));
        assert!(!s.matches(&labels(&[("b", "x")])));
        let s = parse("!(has(a) && b == 'x')");
        assert!(s.matches(&labels(&[("a", "1")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("b", "x")])));
    }

    #[test]
    fn comparisons_on_present_labels() {
        let l = labels(&[("app", "web-frontend"), ("tier", "")]);
        let yes = [
            "all()",
            "has(app)",
            "has(tier)",
            "app == 'web-frontend'",
            "tier == ''",
            "app != 'web'",
            "app in {'db', 'web-frontend'}",
            "app not in {'db', 'web'}",
            "app starts with 'web-'",
            "app starts with ''",
            "app ends with 'end'",
            "app contains 'b-f'",
            "app contains ''",
            "tier in {''}",
        ];
        let no = [
            "has(ap)",
            "app == 'web'",
            "app == 'WEB-FRONTEND'",
            "app != 'web-frontend'",
            "tier != ''",
            "app in {'db', 'web'}",
            "app in {}",
            "app not in {'web-frontend'}",
            "app starts with 'frontend'",
            "app ends with 'web'",
            "app contains 'x'",
            "tier contains 'x'",
        ];
        for s in yes {
            assert!(parse(s).matches(&l), "{s} should match");
        }
        for s in no {
            assert!(!parse(s).matches(&l), "{s} should not match");
        }
    }

    #[test]
    fn absent_labels() {
        let l = labels(&[("other", "x")]);
        // The negative comparisons hold for a label that is not there...
        for s in ["app != 'web'", "app not in {'web'}", "app not in {}", "!has(app)", "!app == 'web'"] {
            assert!(parse(s).matches(&l), "{s} should match");
        }
        // ...the positive ones do not, not even with an empty operand.
        for s in [
            "has(app)",
            "app == 'web'",
            "app == ''",
            "app in {'web', ''}",
            "app starts with ''",
            "app ends with ''",
            "app contains ''",
        ] {
            assert!(!parse(s).matches(&l), "{s} should not match");
        }
    }

    #[test]
    fn sets_are_canonical() {
        assert_eq!(parse("a in {'b', 'a', 'b'}"), parse("a in {'a', 'b'}"));
        assert_eq!(parse("a in {'b', 'a', 'b'}").to_string(), "a in {\"a\", \"b\"}");
    }

    #[test]
    fn canonical_form() {
        let cases = [
            ("", "all()"),
            ("a=='1'||b=='2'&&c=='3'", "a == \"1\" || b == \"2\" && c == \"3\""),
            ("(a=='1'||b=='2')&&c=='3'", "(a == \"1\" || b == \"2\") && c == \"3\""),
            ("has(a)&&(has(b)&&has(c))", "has(a) && (has(b) && has(c))"),
            ("(has(a)&&has(b))&&has(c)", "has(a) && has(b) && has(c)"),
            ("has(a)||(has(b)||has(c))", "has(a) || (has(b) || has(c))"),
            ("!(has(a)&&has(b))", "!(has(a) && has(b))"),
            ("!(!has(a))", "!!has(a)"),
            ("((((has(a)))))", "has(a)"),
            ("a == 'x\"y'", "a == 'x\"y'"),
            ("a not in {}", "a not in {}"),
            (
                "a starts with 'x' && a ends with 'y' || a contains 'z'",
                "a starts with \"x\" && a ends with \"y\" || a contains \"z\"",
            ),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "{input:?}");
        }
    }

    #[test]
    fn round_trips() {
        let inputs = [
            "",
            "all()",
            "has(projectcalico.org/namespace)",
            "app == 'web'",
            "app != \"web\"",
            "app in {\"z\", 'a', \"m\"}",
            "app not in {}",
            "app starts with 'a' || app ends with 'b' && app contains 'c'",
            "!(a == '1' || b == '2') && !c == '3'",
            "((a == '1' || b == '2') && (c == '3' || d == '4')) || !(e == '5' && f == '6')",
            "a == '1' || (b == '2' || c == '3')",
            "a == '1' && (b == '2' && c == '3')",
            "!!!has(x)",
            "x == 'it\"s'",
            "x == \"it's\"",
            "all == 'x' && in in {'in'} || not not in {'not'}",
            "!(all() && has(a)) || !(all())",
        ];
        for input in inputs {
            let first = parse(input);
            let printed = first.to_string();
            let again = parse(&printed);
            assert_eq!(again, first, "{input:?} printed as {printed:?}");
            // The canonical form is a fixed point.
            assert_eq!(again.to_string(), printed, "{input:?}");
        }
    }

    #[test]
    fn round_trips_of_built_trees() {
        // Trees a parser would never build in this shape still print so
        // they parse back equal: right-nested chains, Not of binaries.
        let (a, b, c) = (eq("a", "1"), Selector::Has("b".into()), Selector::In("c".into(), set(&["x"])));
        let trees = [
            or(a.clone(), or(b.clone(), c.clone())),
            and(a.clone(), and(b.clone(), c.clone())),
            and(or(a.clone(), b.clone()), or(b.clone(), c.clone())),
            not(and(a.clone(), not(or(b.clone(), c.clone())))),
            or(and(a.clone(), not(b.clone())), and(not(a.clone()), c.clone())),
        ];
        for tree in trees {
            assert_eq!(parse(&tree.to_string()), tree, "{tree}");
        }
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let s: Selector = serde_json::from_str(r#""app=='web'&&!has(canary)""#).expect("deserializes");
        assert_eq!(s, and(eq("app", "web"), not(Selector::Has("canary".into()))));
        assert_eq!(serde_json::to_string(&s).expect("serializes"), r#""app == \"web\" && !has(canary)""#);
        let back: Selector =
            serde_json::from_value(serde_json::to_value(&s).expect("serializes")).expect("parses");
        assert_eq!(back, s);
        // The empty string is all(), like an absent selector.
        assert_eq!(serde_json::from_str::<Selector>(r#""""#).expect("deserializes"), Selector::All);
        assert_eq!(Selector::default(), Selector::All);
    }

    #[test]
    fn serde_errors_give_offset_and_reason() {
        let e = serde_json::from_str::<Selector>(r#""app == abc""#).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "invalid selector 'app == abc' at offset 7: expected a quoted string after '==', found 'abc'"
            ),
            "{e}"
        );
        let e = serde_json::from_str::<Selector>("42").unwrap_err().to_string();
        assert!(e.starts_with("invalid type: integer `42`, expected a Calico selector string"), "{e}");
    }

    #[test]
    fn from_str_is_parse() {
        let s: Selector = "has(a)".parse().expect("parses");
        assert_eq!(s, Selector::Has("a".into()));
        assert!("has(".parse::<Selector>().is_err());
    }

    fn assert_error(input: &str, offset: usize, reason: &str) {
        let e = error(input);
        assert_eq!((e.offset, e.reason.as_str()), (offset, reason), "{input:?}");
    }

    #[test]
    fn parse_errors_say_where_and_what() {
        assert_error("app == abc", 7, "expected a quoted string after '==', found 'abc'");
        assert_eq!(error("app == abc").to_string(), "at 7: expected a quoted string after '==', found 'abc'");
        assert_error("app != ", 7, "expected a quoted string after '!=', found the end of the selector");
        assert_error(
            "app",
            3,
            "expected an operator (==, !=, in, not in, starts with, ends with, contains) after 'app', found the end of the selector",
        );
        assert_error("app = 'x'", 4, "expected '==', found a single '='");
        assert_error("has(a) & has(b)", 7, "expected '&&', found a single '&'");
        assert_error("has(a) | has(b)", 7, "expected '||', found a single '|'");
        assert_error("app == 'x", 7, "unterminated string: no closing single quote");
        assert_error("app == \"x'", 7, "unterminated string: no closing double quote");
        assert_error(
            "app == 'x' @",
            11,
            "unexpected character '@'; label keys are made of letters, digits, '/', '.', '-' and '_'",
        );
        assert_error(
            "é == 'x'",
            0,
            "unexpected character 'é'; label keys are made of letters, digits, '/', '.', '-' and '_'",
        );
        assert_error("app in 'x'", 7, "expected '{' after 'in', found the string 'x'");
        assert_error("app not in ('x')", 11, "expected '{' after 'not in', found '('");
        assert_error("app not 'x'", 8, "expected 'in' after 'not', found the string 'x'");
        assert_error("app in {'a' 'b'}", 12, "expected ',' or '}' in the set, found the string 'b'");
        assert_error("app in {'a',}", 12, "expected a quoted string after '{' or ',', found '}'");
        assert_error("app in {'a'", 11, "expected ',' or '}' in the set, found the end of the selector");
        assert_error("app starts 'x'", 11, "expected 'with' after 'starts', found the string 'x'");
        assert_error("app ends by 'x'", 9, "expected 'with' after 'ends', found 'by'");
        assert_error(
            "app contains",
            12,
            "expected a quoted string after 'contains', found the end of the selector",
        );
        assert_error("app starts with x", 16, "expected a quoted string after 'starts with', found 'x'");
        assert_error(
            "app ends with",
            13,
            "expected a quoted string after 'ends with', found the end of the selector",
        );
        assert_error("(has(a)", 7, "expected ')' to close the '(' at 0, found the end of the selector");
        assert_error("has(a))", 6, "expected '&&', '||' or the end of the selector, found ')'");
        assert_error("has(a) has(b)", 7, "expected '&&', '||' or the end of the selector, found 'has'");
        assert_error(
            "has(a) &&",
            9,
            "expected a selector term (a comparison, all(), has(key), '!' or '('), found the end of the selector",
        );
        assert_error(
            "|| has(a)",
            0,
            "expected a selector term (a comparison, all(), has(key), '!' or '('), found '||'",
        );
        assert_error(
            "'x' == a",
            0,
            "expected a selector term (a comparison, all(), has(key), '!' or '('), found the string 'x'",
        );
        assert_error(
            "()",
            1,
            "expected a selector term (a comparison, all(), has(key), '!' or '('), found ')'",
        );
        assert_error(
            "!= 'x'",
            0,
            "expected a selector term (a comparison, all(), has(key), '!' or '('), found '!='",
        );
        assert_error("has()", 4, "expected a label key after 'has(', found ')'");
        assert_error("has('a')", 4, "expected a label key after 'has(', found the string 'a'");
        assert_error("has(a b)", 6, "expected ')' after the key in has(...), found 'b'");
        assert_error("all(a)", 4, "expected ')' after 'all(' (all() takes no argument), found 'a'");
        assert_error("global()", 0, "unknown function 'global()'; the functions are all() and has(key)");
        assert_error(
            "a == 'x' && b",
            13,
            "expected an operator (==, !=, in, not in, starts with, ends with, contains) after 'b', found the end of the selector",
        );
    }

    #[test]
    fn errors_show_long_input_cut() {
        let key = "k".repeat(1000);
        let e = error(&key);
        assert!(e.reason.len() < 200, "{} bytes: {e}", e.reason.len());
        assert!(e.reason.contains(&format!("'{}…'", "k".repeat(40))), "{e}");
    }

    #[test]
    fn length_limit() {
        let fits = format!("a == '{}'", "x".repeat(MAX_LEN - 7));
        assert_eq!(fits.len(), MAX_LEN);
        assert!(parse(&fits).matches(&labels(&[("a", &"x".repeat(MAX_LEN - 7))])));
        let too_long = format!("a == '{}'", "x".repeat(MAX_LEN - 6));
        assert_error(&too_long, MAX_LEN, "the selector is 4097 bytes long; at most 4096 are allowed");
        // Huge input is refused before any work on it.
        let e = error(&"(".repeat(10 << 20));
        assert_eq!(e.offset, MAX_LEN);
        assert!(e.reason.contains("10485760 bytes long"), "{e}");
    }

    #[test]
    fn depth_limit() {
        let nested =
            |n: usize, open: &str, close: &str| format!("{}has(a){}", open.repeat(n), close.repeat(n));
        assert_eq!(parse(&nested(MAX_DEPTH, "(", ")")), Selector::Has("a".into()));
        let too_deep = "the selector nests '(' and '!' deeper than 64 levels";
        assert_error(&nested(MAX_DEPTH + 1, "(", ")"), MAX_DEPTH, too_deep);
        assert!(parse(&nested(MAX_DEPTH, "!", "")).matches(&labels(&[("a", "")])));
        assert_error(&nested(MAX_DEPTH + 1, "!", ""), MAX_DEPTH, too_deep);
        // Both kinds count together: the 65th level is the 33rd '!', at 64.
        assert_error(&nested(MAX_DEPTH / 2 + 1, "!(", ")"), MAX_DEPTH, too_deep);
        assert_error(&nested(MAX_DEPTH / 2 + 1, " ! (", ")"), MAX_DEPTH * 2 + 1, too_deep);
        // Depth is nesting, not count: siblings do not add up.
        let siblings = vec!["((((has(a)))))"; 40].join(" && ");
        assert!(parse(&siblings).matches(&labels(&[("a", "")])));
        // As deep as the length limit allows, refused cleanly.
        assert_error(&"(".repeat(MAX_LEN), MAX_DEPTH, too_deep);
        assert_error(&"!".repeat(MAX_LEN), MAX_DEPTH, too_deep);
    }

    #[test]
    fn longest_chains_are_handled() {
        // The length limit bounds how deep a left-nested chain can get;
        // evaluating, printing, comparing and dropping it must be fine.
        let term = "has(a)";
        let n = (MAX_LEN + 2) / (term.len() + 2);
        for op in ["&&", "||"] {
            let s = vec![term; n].join(op);
            assert!(s.len() <= MAX_LEN);
            let sel = parse(&s);
            assert!(sel.matches(&labels(&[("a", "1")])));
            assert!(!sel.matches(&labels(&[])));
            assert_eq!(parse(&sel.to_string().replace(' ', "")), sel);
            assert_eq!(sel.clone(), sel);
        }
    }
}
