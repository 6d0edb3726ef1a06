//! Print-ready A4 pages of Chinese text, for letters sent by post.
//!
//! The text is set in STSong-Light, one of the standard Chinese fonts every
//! PDF reader supplies (PDF 1.7 §9.7.5.2, Adobe-GB1): nothing is embedded,
//! so a server needs no font file, and the same input always gives the same
//! bytes (no dates, no ids), so a letter printed before it was mailed can be
//! matched by hash with the one recorded when it was. Characters are encoded
//! UTF-16BE (`UniGB-UTF16-H`), and a `ToUnicode` map lets readers copy and
//! search the text.

use std::collections::BTreeSet;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// A4, in points.
const PAGE: (f32, f32) = (595.0, 842.0);
/// Page margins (about 25 mm).
const MARGIN: f32 = 72.0;
const FONT: Name<'static> = Name(b"F1");

/// Where a paragraph's lines sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

/// One paragraph: wrapped to the page width, each line of `text` starting
/// a new line.
#[derive(Debug, Clone, PartialEq)]
pub struct Paragraph {
    pub text: String,
    /// Font size in points.
    pub size: f32,
    pub align: Align,
    /// Space above it, in points.
    pub space_before: f32,
}

impl Paragraph {
    pub fn new(text: impl Into<String>, size: f32, align: Align, space_before: f32) -> Paragraph {
        Paragraph {
            text: text.into(),
            size,
            align,
            space_before,
        }
    }
}

/// A character's advance in ems: ASCII is half-width (the font's `W`
/// array says so), everything else full-width.
fn advance(c: char) -> f32 {
    if (' '..='~').contains(&c) { 0.5 } else { 1.0 }
}

/// Splits `line` into pieces no wider than `width` points at `size`:
/// Chinese breaks between any two characters; a Latin word (a tracking
/// number, a hash) breaks only when it is longer than a line.
fn wrap(line: &str, size: f32, width: f32) -> Vec<String> {
    let max = width / size;
    let mut out = Vec::new();
    let mut current = String::new();
    let mut used = 0.0;
    // Tokens: runs of ASCII non-space characters, or single others.
    let mut tokens: Vec<String> = Vec::new();
    for c in line.chars() {
        let ascii_word = c.is_ascii_graphic();
        match tokens.last_mut() {
            Some(t) if ascii_word && t.chars().last().is_some_and(|l| l.is_ascii_graphic()) => {
                t.push(c)
            }
            _ => tokens.push(c.to_string()),
        }
    }
    for token in tokens {
        let w: f32 = token.chars().map(advance).sum();
        if used + w > max && !current.is_empty() {
            out.push(std::mem::take(&mut current).trim_end().to_owned());
            used = 0.0;
            if token == " " {
                continue;
            }
        }
        if w > max {
            // A word longer than the line: cut it.
            for c in token.chars() {
                if used + advance(c) > max && !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                    used = 0.0;
                }
                current.push(c);
                used += advance(c);
            }
        } else {
            current.push_str(&token);
            used += w;
        }
    }
    out.push(current.trim_end().to_owned());
    out
}

/// `text` as the font's codes: UTF-16BE.
fn encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The PDF of `paragraphs` on as many A4 pages as they need, titled
/// `title` in the document information.
pub fn render(title: &str, paragraphs: &[Paragraph]) -> Vec<u8> {
    let width = PAGE.0 - 2.0 * MARGIN;
    // Lay the lines out: (page, x, y, size, text).
    let mut placed: Vec<(usize, f32, f32, f32, String)> = Vec::new();
    let mut page = 0;
    let mut y = PAGE.1 - MARGIN;
    for p in paragraphs {
        y -= p.space_before;
        let leading = p.size * 1.6;
        for line in p.text.lines() {
            for piece in wrap(line, p.size, width) {
                if y - leading < MARGIN {
                    page += 1;
                    y = PAGE.1 - MARGIN;
                }
                y -= leading;
                let w: f32 = piece.chars().map(advance).sum::<f32>() * p.size;
                let x = match p.align {
                    Align::Left => MARGIN,
                    Align::Center => MARGIN + (width - w) / 2.0,
                    Align::Right => MARGIN + width - w,
                };
                placed.push((page, x, y, p.size, piece));
            }
        }
    }
    let pages = page + 1;

    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let info = Ref::new(3);
    let type0 = Ref::new(4);
    let cid = Ref::new(5);
    let descriptor = Ref::new(6);
    let to_unicode = Ref::new(7);
    let first_page = 8;
    let page_ref = |i: usize| Ref::new(first_page + 2 * i as i32);
    let content_ref = |i: usize| Ref::new(first_page + 2 * i as i32 + 1);

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages).map(page_ref))
        .count(pages as i32);
    pdf.document_info(info)
        .title(TextStr(title))
        .producer(TextStr("rollcall"));

    for i in 0..pages {
        let mut p = pdf.page(page_ref(i));
        p.media_box(Rect::new(0.0, 0.0, PAGE.0, PAGE.1));
        p.parent(tree);
        p.contents(content_ref(i));
        p.resources().fonts().pair(FONT, type0);
        p.finish();
        let mut content = Content::new();
        for (_, x, y, size, text) in placed.iter().filter(|l| l.0 == i) {
            content.begin_text();
            content.set_font(FONT, *size);
            content.next_line(*x, *y);
            content.show(Str(&encode(text)));
            content.end_text();
        }
        pdf.stream(content_ref(i), &content.finish());
    }

    let system_info = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"GB1"),
        supplement: 4,
    };
    pdf.type0_font(type0)
        .base_font(Name(b"STSong-Light-UniGB-UTF16-H"))
        .encoding_predefined(Name(b"UniGB-UTF16-H"))
        .descendant_font(cid)
        .to_unicode(to_unicode);
    let mut font = pdf.cid_font(cid);
    font.subtype(CidFontType::Type0)
        .base_font(Name(b"STSong-Light"))
        .system_info(system_info)
        .font_descriptor(descriptor)
        .default_width(1000.0);
    // Adobe-GB1's Latin (proportional 1–95, half-width 814–939) set half-width.
    font.widths().same(1, 95, 500.0).same(814, 939, 500.0);
    font.finish();
    pdf.font_descriptor(descriptor)
        .name(Name(b"STSong-Light"))
        .flags(FontFlags::SYMBOLIC)
        .bbox(Rect::new(-25.0, -254.0, 1000.0, 880.0))
        .italic_angle(0.0)
        .ascent(880.0)
        .descent(-120.0)
        .cap_height(880.0)
        .stem_v(93.0);

    // Every character used, for copying and searching (characters beyond
    // the Basic Multilingual Plane are drawn but not mapped).
    let used: BTreeSet<char> = placed.iter().flat_map(|l| l.4.chars()).collect();
    let mut cmap = UnicodeCmap::<u16>::new(
        Name(b"Adobe-UCS2"),
        SystemInfo {
            registry: Str(b"Adobe"),
            ordering: Str(b"UCS"),
            supplement: 0,
        },
    );
    for c in used {
        if let Ok(code) = u16::try_from(u32::from(c)) {
            cmap.pair(code, c);
        }
    }
    pdf.cmap(to_unicode, &cmap.finish());
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("短文本", 12.0, 100.0, vec!["短文本"])]
    // 100 pt at 10 pt is 10 ems: ten Chinese characters a line.
    #[case("一二三四五六七八九十甲乙", 10.0, 100.0, vec!["一二三四五六七八九十", "甲乙"])]
    // A Latin word stays whole when it fits on the next line.
    #[case("单号 EMS1234567890CN", 10.0, 80.0, vec!["单号", "EMS1234567890CN"])]
    // Longer than a line: cut.
    #[case("abcdefghijklmnopqrstuvwxyz", 10.0, 50.0, vec!["abcdefghij", "klmnopqrst", "uvwxyz"])]
    #[case("", 10.0, 50.0, vec![""])]
    fn lines_wrap(
        #[case] text: &str,
        #[case] size: f32,
        #[case] width: f32,
        #[case] expected: Vec<&str>,
    ) {
        assert_eq!(wrap(text, size, width), expected);
    }

    #[test]
    fn the_same_letter_gives_the_same_bytes() {
        let paras = [
            Paragraph::new("返岗通知书", 16.0, Align::Center, 0.0),
            Paragraph::new(
                "张三：\n您自 2026-12-01 起未到岗。",
                12.0,
                Align::Left,
                12.0,
            ),
        ];
        let a = render("返岗通知书", &paras);
        assert_eq!(a, render("返岗通知书", &paras));
        assert!(a.starts_with(b"%PDF-"));
        // The text is there, UTF-16BE (a hex string), and mapped back for readers.
        let text = String::from_utf8_lossy(&a).to_ascii_uppercase();
        let hex: String = encode("张三：")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(text.contains(&format!("<{hex}>")), "{text}");
        assert!(text.contains("STSONG-LIGHT") && text.contains("TOUNICODE"));
        assert_ne!(
            a,
            render(
                "返岗通知书",
                &[Paragraph::new("李四", 12.0, Align::Left, 0.0)]
            )
        );
    }

    #[test]
    fn a_long_letter_takes_several_pages() {
        let long = "很长的一段文字。".repeat(400);
        let pdf = render("t", &[Paragraph::new(long, 12.0, Align::Left, 0.0)]);
        let text = String::from_utf8_lossy(&pdf);
        assert!(
            text.contains("/Count 3") || text.contains("/Count 4"),
            "{}",
            &text[..400]
        );
    }
}
