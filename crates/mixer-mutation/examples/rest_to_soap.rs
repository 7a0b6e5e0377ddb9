//! REST -> SOAP -> REST, end to end on 127.0.0.1: a stand-in SOAP service, a REST request
//! rewritten by the pipeline's mutation (config: examples/mutation/rest_to_soap.yaml), sent to
//! the service, and its SOAP reply rewritten back into JSON. Prints each step.
//!
//! cargo run -p mixer-mutation --example rest_to_soap

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mixer_attr::{Attributes, StringMap, Value, well_known as wk};
use mixer_core::adapter::HeaderChange;
use mixer_core::mutation::{Chunk, Direction};
use mixer_core::pal::virtual_time::VirtualPlatform;
use mixer_core::{AdapterRegistry, CompileOptions, Pipeline, Worker};

type Headers = Vec<(String, String)>;

fn main() -> Result<(), Box<dyn Error>> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/mutation");
    let worker = pipeline(&config)?;
    let service = TcpListener::bind("127.0.0.1:0")?;
    let addr = service.local_addr()?;
    let server = std::thread::spawn(move || soap_service(&service));
    println!("stand-in SOAP service on http://{addr}/LibraryService\n");

    // 1. The REST request as the client sent it.
    let mut headers: Headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/shelves/7/books".into()),
        ("content-type".into(), "application/json".into()),
        ("accept".into(), "*/*".into()),
        ("x-user".into(), "alice".into()),
    ];
    let body = r#"{"title": "Dune & Sons <2nd ed.>", "author": "Frank Herbert", "tags": ["sf", "classic"]}"#;
    println!("== 1. REST request");
    print_message(&headers, body.as_bytes());

    // 2. Request mutation, the body arriving in chunks (as Envoy's decodeData sees it).
    let bag = request_bag(&headers);
    let mut stream = worker.mutation_stream(&bag, Direction::Request)?;
    println!(
        "== 2. request mutation: buffers body: {}, limit: {:?} bytes",
        stream.buffers_body(),
        stream.body_limit()
    );
    for chunk in body.as_bytes().chunks(32) {
        let pushed = stream.push(chunk)?;
        println!("   pushed {} bytes -> {pushed:?}", chunk.len());
    }
    let soap = stream.finish()?;
    apply(&mut headers, &soap.header_changes);
    let soap_body = soap.body.unwrap_or_default();
    println!("   header changes: {:?}\n", soap.header_changes);

    // 3. The SOAP call.
    println!("== 3. SOAP request sent to the service");
    print_message(&headers, &soap_body);
    let (mut reply_headers, reply_body) = call(addr, &headers, &soap_body)?;
    println!("== 4. SOAP response");
    print_message(&reply_headers, &reply_body);

    // 5. Response mutation (Envoy's encodeData), chunk by chunk.
    let status: i64 = header(&reply_headers, ":status").unwrap_or("0").parse()?;
    let reply_bag = bag.clone().with(wk::RESPONSE_CODE, Value::Int64(status));
    let mut stream = worker.mutation_stream(&reply_bag, Direction::Response)?;
    for chunk in reply_body.chunks(64) {
        if stream.push(chunk)? == Chunk::Forward {
            println!("   (forwarded unchanged)");
        }
    }
    let rest = stream.finish()?;
    apply(&mut reply_headers, &rest.header_changes);
    println!("== 5. REST response to the client");
    print_message(&reply_headers, rest.body.as_deref().unwrap_or(&reply_body));

    // 6. What clients get for bodies that cannot be rewritten.
    println!("== 6. errors");
    let big = vec![b' '; 70_000];
    let mut stream = worker.mutation_stream(&bag, Direction::Request)?;
    let err = big
        .chunks(16 * 1024)
        .find_map(|c| stream.push(c).err())
        .ok_or("the limit did not apply")?;
    println!("   70000-byte body: {} {err}", err.http_status());
    let err = worker
        .mutation_stream(&bag, Direction::Request)?
        .finish_with(b"{\"title\": oops}")
        .err()
        .ok_or("bad JSON was accepted")?;
    println!("   bad JSON: {} {err}", err.http_status());
    let err = worker
        .mutation_stream(&reply_bag, Direction::Response)?
        .finish_with(b"<Envelope><Body>")
        .err()
        .ok_or("bad XML was accepted")?;
    println!("   bad SOAP reply: {} {err}", err.http_status());
    server
        .join()
        .map_err(|_| "service thread panicked")?
        .map_err(|e| format!("SOAP service: {e}"))?;
    Ok(())
}

fn pipeline(config: &std::path::Path) -> Result<Worker, Box<dyn Error>> {
    let vt = VirtualPlatform::new();
    let platform = vt.platform();
    let loaded = mixer_config::load_paths(&[config.to_path_buf()])?;
    let mut registry = AdapterRegistry::new();
    registry.register(Arc::new(mixer_mutation::Rewrite));
    let snapshot = mixer_config::compile_loaded(
        &loaded,
        &registry,
        &platform,
        None,
        &CompileOptions::default(),
    )
    .map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        lines.join("\n")
    })?;
    Ok(Pipeline::new(snapshot, platform).worker(Arc::new(vt)))
}

fn request_bag(headers: &Headers) -> Attributes<'static> {
    let map: StringMap = headers
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .cloned()
        .collect();
    let get = |name| header(headers, name).unwrap_or_default().to_string();
    Attributes::new()
        .with(wk::REQUEST_METHOD, Value::String(get(":method").into()))
        .with(wk::REQUEST_PATH, Value::String(get(":path").into()))
        .with(wk::REQUEST_HEADERS, Value::string_map(map))
}

fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Applies header changes as a proxy would.
fn apply(headers: &mut Headers, changes: &[HeaderChange]) {
    for c in changes {
        match c {
            HeaderChange::Set(n, v) => {
                headers.retain(|(k, _)| k != n);
                headers.push((n.clone(), v.clone()));
            }
            HeaderChange::Append(n, v) => headers.push((n.clone(), v.clone())),
            HeaderChange::Remove(n) => headers.retain(|(k, _)| k != n),
        }
    }
}

fn print_message(headers: &Headers, body: &[u8]) {
    for (k, v) in headers {
        println!("   {k}: {v}");
    }
    println!();
    for line in String::from_utf8_lossy(body).lines() {
        println!("   {line}");
    }
    println!();
}

/// Sends one HTTP/1.1 request and reads the reply (`:status` plus headers, body).
fn call(
    addr: std::net::SocketAddr,
    headers: &Headers,
    body: &[u8],
) -> Result<(Headers, Vec<u8>), Box<dyn Error>> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let method = header(headers, ":method").unwrap_or("POST");
    let path = header(headers, ":path").unwrap_or("/");
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let (status_line, mut reply, body) = read_message(&mut BufReader::new(conn))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .to_string();
    reply.insert(0, (":status".into(), status));
    Ok((reply, body))
}

/// Reads a start line, headers (names lower-cased) and a `content-length` body.
fn read_message(r: &mut impl BufRead) -> Result<(String, Headers, Vec<u8>), Box<dyn Error>> {
    let mut start = String::new();
    r.read_line(&mut start)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = header(&headers, "content-length").unwrap_or("0").parse()?;
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    Ok((start.trim().to_string(), headers, body))
}

/// The legacy service: answers one AddBook call.
fn soap_service(listener: &TcpListener) -> Result<(), String> {
    serve_one(listener).map_err(|e| e.to_string())
}

fn serve_one(listener: &TcpListener) -> Result<(), Box<dyn Error>> {
    let (conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let (start, headers, body) = read_message(&mut reader)?;
    let body = String::from_utf8_lossy(&body);
    let action = header(&headers, "soapaction").unwrap_or("");
    let ok = start.starts_with("POST /LibraryService ")
        && action == "\"urn:example:library#AddBook\""
        && body.contains("<lib:ShelfId>7</lib:ShelfId>");
    let (status, reply) = if ok {
        let envelope = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\n\
             \x20 <s:Body>\n\
             \x20   <AddBookResponse xmlns=\"urn:example:library\">\n\
             \x20     <BookId>1042</BookId>\n\
             \x20     <Status>CREATED</Status>\n\
             \x20   </AddBookResponse>\n\
             \x20 </s:Body>\n\
             </s:Envelope>\n";
        ("200 OK", envelope.to_string())
    } else {
        (
            "500 Internal Server Error",
            format!("unexpected call: {start} / {action}"),
        )
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: text/xml; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    Ok(())
}
