//! Writes the committed seed corpora into `fuzz/seeds/<target>/`. Deterministic: run it again
//! (`cd fuzz && cargo run --example gen_seeds`) after changing the fixtures or the input layout.

use std::fs;
use std::path::{Path, PathBuf};

use groupwatch_fuzz::{crypt, raw_encrypt, selector, MODE_FRAME, MODE_RAW, MODE_ROUND_TRIP, RECEIVE_IDS};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = fuzz.join("../fixtures/wecom");
    let seeds = fuzz.join("seeds");
    let mut xmls: Vec<(String, String)> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), fs::read_to_string(&p).unwrap()))
        .collect();
    xmls.sort();

    // event: the decrypted callbacks as they are.
    for (name, xml) in &xmls {
        write(&seeds.join("event"), &format!("{name}.xml"), xml.as_bytes());
    }

    // envelope: the POST bodies that would carry them, in both CDATA and plain-text shape.
    let c = crypt(0);
    for (i, (name, xml)) in xmls.iter().enumerate() {
        let random: [u8; 16] = *format!("{i:0>16}").as_bytes().first_chunk().unwrap();
        let enc = c.encrypt_with_random(xml.as_bytes(), &random);
        let cdata = format!(
            "<xml><ToUserName><![CDATA[ww1]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
        );
        write(&seeds.join("envelope"), &format!("{name}.xml"), cdata.as_bytes());
        if i == 0 {
            let plain = format!(
                "<xml>\n  <AgentID>1</AgentID>\n  <Encrypt>{enc}</Encrypt>\n  <ToUserName>ww1</ToUserName>\n</xml>"
            );
            write(&seeds.join("envelope"), "plain_text.xml", plain.as_bytes());
        }

        // decrypt, raw mode: a correctly signed request, fields split by NUL.
        let (ts, nonce) = ("1572505490", "1372623149");
        let sig = c.signature(ts, nonce, &enc);
        let mut raw = vec![selector(MODE_RAW, 0)];
        raw.extend_from_slice([sig.as_str(), ts, nonce, enc.as_str()].join("\0").as_bytes());
        write(&seeds.join("decrypt"), &format!("raw_{name}"), &raw);
    }

    // decrypt, round-trip mode: random prefix then message, for each receive id.
    for (rid, _) in RECEIVE_IDS.iter().enumerate() {
        for (name, msg) in [("empty", ""), ("echostr", "1616140317555161061"), ("utf8", "你好, 群 👋")] {
            let mut input = vec![selector(MODE_ROUND_TRIP, rid)];
            input.extend_from_slice(b"aaaabbbbccccdddd");
            input.extend_from_slice(msg.as_bytes());
            write(&seeds.join("decrypt"), &format!("round_trip_{rid}_{name}"), &input);
        }
    }

    // decrypt, frame mode: valid frames (message + receive id + pad) for each receive id,
    // plus edge cases: a 32-byte pad, and a length field of u32::MAX.
    for (rid, receive_id) in RECEIVE_IDS.iter().enumerate() {
        for (name, msg) in [("empty", &b""[..]), ("hello", b"hello"), ("not_utf8", b"\xff\xfe")] {
            let mut frame = b"0123456789abcdef".to_vec();
            frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            frame.extend_from_slice(msg);
            frame.extend_from_slice(receive_id.as_bytes());
            let pad = 32 - frame.len() % 32;
            frame.resize(frame.len() + pad, pad as u8);
            let mut input = vec![selector(MODE_FRAME, rid)];
            input.extend_from_slice(&frame);
            write(&seeds.join("decrypt"), &format!("frame_{rid}_{name}"), &input);
        }
    }
    let mut whole_pad = vec![selector(MODE_FRAME, 2)];
    whole_pad.extend_from_slice(b"0123456789abcdef\0\0\0\0");
    whole_pad.resize(1 + 64, 0);
    whole_pad[20 + 1..32 + 1].fill(b'x');
    whole_pad[1 + 32..].fill(32);
    whole_pad[1 + 16..1 + 20].copy_from_slice(&12u32.to_be_bytes());
    write(&seeds.join("decrypt"), "frame_2_whole_pad_block", &whole_pad);
    let mut huge_len = vec![selector(MODE_FRAME, 1)];
    huge_len.extend_from_slice(b"0123456789abcdef");
    huge_len.extend_from_slice(&u32::MAX.to_be_bytes());
    huge_len.extend_from_slice(b"c");
    write(&seeds.join("decrypt"), "frame_1_huge_length", &huge_len);

    // Sanity: the raw-encrypt helper and the library agree.
    let mut frame = b"0123456789abcdef".to_vec();
    frame.extend_from_slice(&2u32.to_be_bytes());
    frame.extend_from_slice(b"hi");
    frame.extend_from_slice(RECEIVE_IDS[1].as_bytes());
    frame.resize(32, 9);
    assert_eq!(crypt(1).decrypt(&raw_encrypt(&frame)).unwrap(), "hi");
    println!("seeds written to {}", seeds.display());
}
