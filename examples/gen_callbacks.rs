//! Writes N distinct, correctly signed and encrypted WeCom callbacks for a load generator, one
//! per line: `PATH?QUERY<TAB>BODY`. Used by `bench/ingest.sh` (wrk reads the file).
//!
//! `cargo run --release --example gen_callbacks -- OUT_FILE N [TENANT [FIRST]]`

use groupwatch::provider::wecom::codec::sign;
use groupwatch::provider::wxbiz::WxCrypt;
use std::io::Write;

// The bench tenant's credentials (bench/groupwatch-bench.toml).
const TOKEN: &str = "QDG6eK";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const CORP: &str = "ww1234567890abcdef";

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).expect("usage: gen_callbacks OUT_FILE N [TENANT [FIRST]]");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).expect("N");
    let tenant = args.get(3).map(String::as_str).unwrap_or("bench");
    // Callback FIRST..FIRST+N: files with disjoint ranges share no callback.
    let first: usize = args.get(4).map(|s| s.parse().expect("FIRST")).unwrap_or(0);
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP).expect("bench key");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut body_bytes = 0usize;
    for i in first..first + n {
        // A typical add_member callback: 1,000 chats, distinct members, versions and times.
        let xml = format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event>\
             <ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9J{:05}]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>\
             <UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>3</JoinScene><MemChangeCnt>1</MemChangeCnt>\
             <MemChangeList><Item><![CDATA[wmOgQhDgAAuXFJGwbve4g{:011}]]></Item></MemChangeList>\
             <LastMemVer><![CDATA[{:032x}]]></LastMemVer><CurMemVer><![CDATA[{:032x}]]></CurMemVer></xml>",
            now - (i % 3600) as i64,
            i % 1000,
            i,
            i * 2,
            i * 2 + 1
        );
        let signed = sign(&crypt, xml.as_bytes(), now);
        let query: Vec<String> = signed.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        body_bytes += signed.body.len();
        let body = String::from_utf8(signed.body).expect("the envelope is text");
        writeln!(file, "/wecom/{tenant}/callback?{}\t{}", query.join("&"), body)?;
    }
    file.flush()?;
    eprintln!("{n} callbacks, {} bytes per body on average", body_bytes / n.max(1));
    Ok(())
}
