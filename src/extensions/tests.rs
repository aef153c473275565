use super::*;

fn offers(values: &[&str]) -> String {
    let mut out = Vec::new();
    let any = write_deflate_offers(values.iter().map(|v| v.as_bytes()), &mut out);
    assert_eq!(any, !out.is_empty());
    String::from_utf8(out).unwrap()
}

fn check(answer: &str, offered: &[&str]) -> Result<(), BadAnswer> {
    check_answer(answer.as_bytes(), offered.iter().map(|v| v.as_bytes()))
}

#[test]
fn deflate_offers_go_as_sent_and_others_are_dropped() {
    // Chromium's offer, untouched.
    assert_eq!(
        offers(&["permessage-deflate; client_max_window_bits"]),
        "permessage-deflate; client_max_window_bits"
    );
    // Several offers over several fields, another extension among them.
    assert_eq!(
        offers(&[
            "x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
            "permessage-deflate, foo; bar=\"a,b\"",
        ]),
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=10, permessage-deflate"
    );
    assert_eq!(offers(&["foo; x=\"permessage-deflate, y\""]), "");
    assert_eq!(offers(&[]), "");
    assert_eq!(offers(&["PerMessage-Deflate"]), "PerMessage-Deflate");
}

#[test]
fn answers_must_answer_an_offer() {
    let chromium = ["permessage-deflate; client_max_window_bits"];
    assert_eq!(check("permessage-deflate", &chromium), Ok(()));
    assert_eq!(
        check(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            &chromium
        ),
        Ok(())
    );
    assert_eq!(
        check(
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=\"10\"",
            &chromium
        ),
        Ok(())
    );
    // Nothing offered: any answer is one the client did not ask for.
    assert_eq!(check("permessage-deflate", &[]), Err(BadAnswer::NotOffered));
    assert_eq!(
        check("permessage-deflate", &["foo"]),
        Err(BadAnswer::NotOffered)
    );
    // Another extension, or two.
    assert_eq!(check("foo", &chromium), Err(BadAnswer::OtherExtension));
    assert_eq!(
        check("permessage-deflate, permessage-deflate", &chromium),
        Err(BadAnswer::OtherExtension)
    );
    assert_eq!(check("", &chromium), Err(BadAnswer::OtherExtension));
    // Parameters RFC 7692 does not allow.
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; client_max_window_bits",
    ] {
        assert_eq!(check(bad, &chromium), Err(BadAnswer::BadParameter), "{bad}");
    }
    // A client window size the client did not invite.
    assert_eq!(
        check(
            "permessage-deflate; client_max_window_bits=10",
            &["permessage-deflate"]
        ),
        Err(BadAnswer::ClientWindowNotOffered)
    );
}
