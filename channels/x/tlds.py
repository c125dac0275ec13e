"""Top-level domains that make a word a link for X's counter (twitter-text's URL rules).

twitter-text links a domain only when it ends in a known TLD. Country codes are listed in
full (ISO 3166 codes plus the few extra delegations); generic TLDs are the original ones and
the widely used newer ones, not IANA's full list of ~1,200. A link written with ``https://``
whose TLD is missing here is still counted conservatively (see ``textcount``); a bare domain
with a missing TLD is counted letter by letter, so the renderer should always write links
with their scheme.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


COUNTRY_CODES = _words(
    """
    ac ad ae af ag ai al am an ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bl bm bn
    bo bq br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj
    dk dm do dz ec ee eg eh er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp
    gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh
    ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml mm mn
    mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph
    pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl sm sn so sr
    ss st su sv sx sy sz tc td tf tg th tj tk tl tm tn to tp tr tt tv tw tz ua ug uk um us uy
    uz va vc ve vg vi vn vu wf ws ye yt za zm zw
    рф укр срб бел қаз мкд мон ею ελ 中国 中國 台灣 台湾 香港 澳門 新加坡 한국 ไทย
    """
)

GENERIC = _words(
    """
    aero app art asia bank bio biz blog build business buzz cafe care cat center city click
    cloud club codes college com community company coop dev digital direct earth eco edu
    email energy events expert express foundation fun gallery global gov group guide guru
    health help host info ink int institute jobs land law life link live ltd media mil mobi
    museum name net network news ngo one onion online org page place plus post press pro
    social software solutions space store studio support systems team tech tel today tools
    top travel tv university vip watch web website wiki work works world xxx xyz zone
    africa asia berlin london nyc paris tokyo jakarta
    academy agency app associates camp capital cash catering church claims cleaning coach
    consulting contractors design directory domains education engineering enterprises
    equipment estate exchange farm finance financial fitness fund futbol games garden gift
    gifts gold golf graphics green haus hiphop holdings house immo industries insure
    international investments kitchen legal lighting limited loans management marketing
    market menu money movie ninja partners photo photography photos pictures pizza plumbing
    productions properties property pub recipes rentals repair report rest restaurant rocks
    run school science security services shop shopping show site ski soccer solar
    supplies supply surgery tax taxi technology tips tours town toys trade training
    vacations ventures video villas vision voyage watch wedding wine wtf yoga
    """
)

PUNYCODE_PREFIX = "xn--"

ALL = COUNTRY_CODES | GENERIC
