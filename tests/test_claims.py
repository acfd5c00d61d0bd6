"""The claim check: numbers in LaTeX prose, matching within rounding, the report, and striking what stays wrong."""

import json

import pytest

from papers.claims import Claim, Fact, Kind, Report, check, matches, numbers, strip_unverified


def written(latex: str) -> list[str]:
    return [n[0] for n in numbers(latex)]


def values(latex: str) -> list[float]:
    return [n[1] for n in numbers(latex)]


# --------------------------------------------------------------------------------------------------
# numbers()


def test_plain_numbers_with_decimals_and_offsets():
    text = "The reward rises from 0.82 to 1.36 after 12 epochs."
    found = numbers(text)
    assert [(w, v, d) for w, v, d, _, _ in found] == [("0.82", 0.82, 2), ("1.36", 1.36, 2), ("12", 12.0, 0)]
    for w, _, _, start, end in found:
        assert text[start:end] == w


def test_inline_math_with_pm_gives_two_numbers():
    assert numbers(r"We obtain $1.36 \pm 0.003$ on average.")[:2] == [
        ("1.36", 1.36, 2, 11, 15), ("0.003", 0.003, 3, 20, 25)]
    assert values(r"a gain of $0.41\pm0.02$ and $\Delta=\pm0.004$") == [0.41, 0.02, 0.004]


def test_percent_keeps_the_written_number():
    assert numbers(r"an improvement of 3.2\% over DPO")[0][:3] == (r"3.2\%", 3.2, 1)
    assert written(r"about 36.0\,\% and 12 percent") == [r"36.0\,\%", "12 percent"]


def test_thousands_separators():
    assert values(r"We train for 1{,}000 steps on 12,000 pairs and 1\,500 prompts.") == [1000.0, 12000.0, 1500.0]
    assert written("1,000 steps")[0] == "1,000"


def test_signs_in_text_and_math():
    assert values(r"a change of -0.012 and $-0.5$ and $-$0.7 and $\beta = -1.5$") == [-0.012, -0.5, -0.7, -1.5]
    # A hyphen after a number is a range, not a sign.
    assert values("between 10-20 seeds and 0.1--0.5") == [10.0, 20.0, 0.1, 0.5]


def test_leading_dot_and_scientific_notation():
    assert numbers("a rate of .5 here")[0][:3] == (".5", 0.5, 1)
    found = {w: (v, d) for w, v, d, _, _ in numbers(r"lr 2.5e-3, or $2.5\times10^{-3}$, or $10^{-4}$, or 1.2e5")}
    assert found["2.5e-3"] == pytest.approx((0.0025, 4))
    assert found[r"2.5\times10^{-3}"] == pytest.approx((0.0025, 4))
    assert found["10^{-4}"] == pytest.approx((0.0001, 4))
    assert found["1.2e5"] == pytest.approx((120000.0, -4))
    assert written(r"a rate of 2.5 $\times 10^{-3}$ here") == [r"2.5 $\times 10^{-3}$"]


def test_citations_references_labels_and_urls_are_skipped():
    text = (r"As shown by \citet{rafailov2023direct} and \citep[see][p.~42]{meng2024simpo}, Table~\ref{tab:1} "
            r"and Eq.~\eqref{eq:3} in Section~\ref{sec:5}\label{sec:results2} (\url{https://x.org/v2/1.5}, "
            r"\href{https://arxiv.org/abs/2305.18290}{the DPO paper}) reach 1.36.")
    assert written(text) == ["1.36"]


def test_figure_widths_and_lengths_are_skipped():
    text = (r"\begin{figure}[t]\centering\includegraphics[width=0.8\linewidth]{figures/run_2.pdf}"
            r"\hspace{0.5cm}\vspace*{-2mm}\caption{Reward of 1.44 per run.}\end{figure}"
            r"\begin{minipage}{0.48\textwidth}text\end{minipage}\input{sections/3}")
    assert written(text) == ["1.44"]


def test_tables_are_skipped():
    text = (r"Before 1.1." "\n"
            r"\begin{table}[h]\centering\begin{tabular}{lcc}\toprule Run & Mean \\ 1 & 99.52 \\ \end{tabular}"
            r"\caption{All 77.7 runs.}\end{table}" "\n"
            r"\begin{tabular}{c} 5.55 \end{tabular} After 2.2.")
    assert written(text) == ["1.1", "2.2"]


def test_comments_are_skipped_but_escaped_percent_is_not():
    text = "We reach 1.36% old value 1.52\nand 2.5\\% more. \\\\% 9.9 is a comment too\nthen 7.5."
    assert written(text) == ["1.36", r"2.5\%", "7.5"]


def test_identifiers_are_skipped():
    text = r"GPT-4, Llama-2-7B, Qwen2.5, L2 loss, sec3, x_1, $x_{12}$, $x^{2}$, $x^3$, 2D, 3rd, v1.2 and 1.2.3 but 4.5."
    assert written(text) == ["4.5"]


def test_command_names_do_not_glue_numbers():
    assert written(r"$\pm0.004$ and $\approx1.3$ and \textbf{1.52}") == ["0.004", "1.3", "1.52"]


# --------------------------------------------------------------------------------------------------
# matches()


def test_matches_within_rounding():
    assert matches(1.36, 2, 1.3604)
    assert not matches(1.36, 2, 1.3654)
    assert matches(1.4, 1, 1.3604)
    assert matches(0.0029, 4, 0.00291)
    assert matches(1000.0, 0, 1000.0)
    assert matches(1.0, 0, 1.36)
    assert not matches(1.5, 1, 1.3604)


def test_matches_half_way_rounding_both_ways():
    assert matches(1.36, 2, 1.355)  # half-up (1.355 is just below in binary: the tolerance covers it)
    assert matches(0.12, 2, 0.125)  # half-even
    assert matches(0.13, 2, 0.125)  # half-up


def test_matches_sign_is_strict():
    assert not matches(-0.012, 3, 0.012)
    assert not matches(0.012, 3, -0.012)
    assert matches(-0.012, 3, -0.01204)
    assert not matches(-0.0, 1, 0.01)


def test_matches_percent_against_fraction_or_percentage():
    assert matches(36.0, 1, 0.3604, percent=True)
    assert matches(36.0, 0, 36.2, percent=True)
    assert not matches(36.0, 1, 0.3604)
    assert not matches(37.0, 1, 0.3604, percent=True)


def test_matches_scientific_notation_and_non_finite():
    assert matches(0.0025, 4, 0.00251)
    assert not matches(0.0025, 4, 0.00256)
    assert not matches(1.0, 2, float("nan"))


def test_broken_latex_is_read_to_the_end():
    # An open group or math span hides nothing; an open \cite argument runs to the end, as TeX would read it.
    assert written("We get 1.36 in {an open group 2.5") == ["1.36", "2.5"]
    assert written("Open math $1.36 and 2.5 % a 3.5 comment") == ["1.36", "2.5"]
    assert written(r"See \cite{open 2020 and 1.5") == []
    report = check({"S": "A } stray 1.5. Then 2.5."}, [])
    assert [c.sentence for c in report.claims] == ["A } stray 1.5.", "Then 2.5."]


# --------------------------------------------------------------------------------------------------
# check()

FACTS = [
    Fact("idea.run_2.reward_gain_at_kl.mean", 1.3604),
    Fact("idea.run_2.reward_gain_at_kl.stderr", 0.00291),
    Fact("baseline.reward_gain_at_kl.mean", 1.2),
    Fact("config.train.steps", 1000.0),
    Fact("idea.run_2.win_rate", 0.3604),
]

RESULTS = (
    r"\section{Results}\label{sec:results}" "\n"
    r"Following \citet{rafailov2023}, we train for 1{,}000 steps over 3 seeds. "
    r"Our method reaches $1.36 \pm 0.0029$ (Table~\ref{tab:results}), compared with 1.20 for the baseline. "
    r"Its win rate is 36.0\%. Our method reaches 1.52 on the held-out prompts. "
    r"This agrees with Smith et al. (2021) and (Lee and Kim, 2019)." "\n\n"
    r"\begin{table}[t]\begin{tabular}{lc} Run 2 & 1.3604 \\ \end{tabular}\end{table}" "\n"
    r"See Figure 12 for all runs." "\n"
)


def test_check_verifies_rounded_numbers_with_fact_names():
    report = check({"Results": RESULTS}, FACTS)
    by_number = {c.written: c for c in report.claims}
    assert by_number["1.36"].fact == "idea.run_2.reward_gain_at_kl.mean"
    assert by_number["0.0029"].fact == "idea.run_2.reward_gain_at_kl.stderr"
    assert by_number["1.20"].fact == "baseline.reward_gain_at_kl.mean"
    assert by_number["1{,}000"].fact == "config.train.steps"
    assert by_number[r"36.0\%"].fact == "idea.run_2.win_rate"
    assert "1.3604" not in by_number  # the table is trusted


def test_check_reports_a_planted_wrong_number_with_its_sentence():
    report = check({"Introduction": "We study DPO.", "Results": RESULTS}, FACTS)
    assert not report.ok
    [bad] = report.unverified
    assert (bad.section, bad.written, bad.value, bad.decimals) == ("Results", "1.52", 1.52, 2)
    assert bad.sentence == "Our method reaches 1.52 on the held-out prompts."
    assert bad.fact is None and bad.exempt is None


def test_check_exempts_small_integers_citation_years_and_cross_references():
    report = check({"Results": RESULTS}, FACTS)
    exempt = {c.written: c.exempt for c in report.claims if c.exempt}
    assert exempt == {"3": "small integer", "2021": "year in a citation", "2019": "year in a citation",
                      "12": "cross-reference"}


def test_check_does_not_exempt_years_outside_citations_or_percent_integers():
    report = check({"Intro": r"In 2023 the gain was 5\%. We use 3 seeds."}, FACTS, small_int_limit=10)
    assert [c.written for c in report.unverified] == ["2023", r"5\%"]
    assert check({"Intro": "We use 12 seeds."}, FACTS, small_int_limit=20).ok


def test_check_prefers_the_first_matching_fact():
    facts = [Fact("a.first", 0.51), Fact("b.second", 0.5)]
    assert check({"S": "about 0.5 here"}, facts).claims[0].fact == "a.first"


def test_sentence_is_one_line_and_trimmed():
    long = "word " * 80
    report = check({"S": f"{long}\nreaches\n1.52 {long}."}, [])
    sentence = report.claims[0].sentence
    assert "\n" not in sentence and "1.52" in sentence and len(sentence) <= 205


# --------------------------------------------------------------------------------------------------
# Report


def test_report_json_round_trips():
    report = check({"Results": RESULTS}, FACTS)
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["checked"] == len(report.claims) == data["verified"] + data["exempt"] + len(data["unverified"])
    assert data["unverified"][0]["written"] == "1.52"
    assert Report.from_json(json.loads(json.dumps(data))).claims == report.claims


def test_feedback_is_one_message_naming_the_number():
    report = check({"Results": RESULTS, "Method": "We use a rate of 0.77 here."}, FACTS)
    message = report.feedback("Results")
    assert isinstance(message, str) and "1.52" in message and "held-out prompts" in message
    assert "0.77" not in message and "Results" in message
    assert "logged" in message and "remove" in message
    assert report.feedback("Introduction") == ""


# --------------------------------------------------------------------------------------------------
# strip_unverified()


def test_strip_removes_exactly_the_planted_sentence():
    report = check({"Results": RESULTS}, FACTS)
    new, removed = strip_unverified(RESULTS, report.unverified)
    assert removed == ["Our method reaches 1.52 on the held-out prompts."]
    assert new == RESULTS.replace("Our method reaches 1.52 on the held-out prompts. ", "")
    assert check({"Results": new}, FACTS).ok


def test_strip_keeps_braces_math_and_environments_balanced():
    text = (r"\paragraph{Setup.} We train for 1{,}000 steps. \textbf{Our method reaches $1.52 \pm 0.1$.} Fine." "\n"
            r"\begin{figure}[t]\centering\includegraphics[width=0.5\linewidth]{a.pdf}"
            r"\caption{Reward. Run 2 gets 9.99 here.}\label{fig:a}\end{figure}" "\n"
            r"\begin{itemize}\item First 1.36.\item Second 7.77\end{itemize}")
    report = check({"S": text}, FACTS)
    assert {c.written for c in report.unverified} == {"1.52", "0.1", "9.99", "7.77"}
    new, removed = strip_unverified(text, report.unverified)
    assert new == (r"\paragraph{Setup.} We train for 1{,}000 steps. Fine." "\n"
                   r"\begin{figure}[t]\centering\includegraphics[width=0.5\linewidth]{a.pdf}"
                   r"\caption{Reward. }\label{fig:a}\end{figure}" "\n"
                   r"\begin{itemize}\item First 1.36.\item \end{itemize}")
    assert len(removed) == 3
    assert check({"S": new}, FACTS).ok


def test_strip_whole_line_sentence_leaves_no_paragraph_break():
    text = "First 1.36 line.\nSecond 4.44 line.\nThird line."
    new, removed = strip_unverified(text, check({"S": text}, FACTS).unverified)
    assert new == "First 1.36 line.\nThird line." and removed == ["Second 4.44 line."]


def test_strip_does_not_end_sentences_at_abbreviations():
    text = r"As in Smith et al. 2020 we get 4.44 e.g. here. Next 1.36."
    new, _ = strip_unverified(text, check({"S": text}, FACTS).unverified)
    assert new == "Next 1.36."


def test_strip_with_nothing_unverified_is_identity():
    claims = [Claim("S", "1.36", 1.36, 2, "x 1.36", "f")]
    assert strip_unverified("x 1.36", claims) == ("x 1.36", [])


def test_strip_keeps_headings_and_takes_closing_quotes():
    text = "\\subsection{Main result 2}\nWe see ``a gain of 4.44.'' Then 1.36 holds."
    new, removed = strip_unverified(text, check({"S": text}, FACTS).unverified)
    assert new == "\\subsection{Main result 2}\nThen 1.36 holds."
    assert removed == ["We see ``a gain of 4.44.''"]


def test_dotted_cross_references_are_exempt():
    report = check({"S": r"As Section~3.2 and Fig.~4.1 show, 1.36 holds."}, FACTS)
    assert [c.exempt for c in report.claims] == ["cross-reference", "cross-reference", None]
    assert report.ok


# --------------------------------------------------------------------------------------------------
# Kinds: what the words around a number say it is


KINDED = [Fact("mean", 1.3604, Kind.MEAN), Fact("se", 0.0291, Kind.STDERR), Fact("lo", 1.3, Kind.INTERVAL),
          Fact("hi", 1.42, Kind.INTERVAL), Fact("diff", 0.0512, Kind.DIFFERENCE), Fact("p", 0.0291, Kind.P_VALUE),
          Fact("alpha", 0.05, Kind.LEVEL), Fact("n", 16.0, Kind.COUNT), Fact("t", 0.0512, Kind.TEMPLATE)]


def contexts(text: str) -> list[tuple[str, str, str | None]]:
    return [(c.written, c.context, c.fact) for c in check({"S": text}, KINDED).claims]


def test_a_cue_belongs_to_the_number_it_is_next_to():
    assert contexts(r"We reach $1.36 \pm 0.029$, a difference of 0.0512 and then 1.36 again.") == [
        ("1.36", "value", "mean"), ("0.029", "standard error", "se"), ("0.0512", "difference", "diff"),
        ("1.36", "value", "mean")]
    assert contexts(r"The interval is [1.30, 1.42], or 1.30--1.42, with $n = 16$ at the 0.05 level.") == [
        ("1.30", "interval bound", "lo"), ("1.42", "interval bound", "hi"), ("1.30", "value", None),
        ("1.42", "value", None), ("16", "count", "n"), ("0.05", "significance level", "alpha")]


def test_a_number_of_another_kind_is_unverified_but_template_text_matches_anywhere():
    assert contexts("The p-value is 0.029 and the mean is 0.029.") == [
        ("0.029", "p-value", "p"), ("0.029", "value", None)]  # a standard error and a p-value, never a value
    assert contexts(r"We use 0.0512 and $p = 0.0512$ and $\pm 0.0512$.") == [
        ("0.0512", "value", "diff"), ("0.0512", "p-value", "t"), ("0.0512", "standard error", "t")]


# --------------------------------------------------------------------------------------------------
# The model's macros: expanded before the check, or refused


def test_a_number_hidden_in_a_macro_is_checked_where_it_is_used():
    from papers.macros import expand

    sections = {"method": r"\newcommand{\gain}{9.87}\def\ours{HingeMix}\let\mine\ours We define it.",
                "results": r"\mine reaches \gain{} on average, \renewcommand{\gain}[1]{#1.5}then \gain{1}."}
    # Read as written, only the definition's number is seen (flagged, not skipped), not where it is stated.
    assert [c.written for c in check(sections, FACTS).unverified] == ["9.87", "1.5"]
    out, struck = expand(sections)
    assert out["results"] == "HingeMix{}reaches 9.87{} on average, then 1.5." and struck == []
    assert out["method"] == " We define it."
    assert [c.written for c in check(out, FACTS).unverified] == ["9.87", "1.5"]


def test_what_cannot_be_expanded_is_refused_and_its_uses_struck():
    from papers.macros import expand

    sections = {"background": r"\def\x#1.{#1}Delimited. \newenvironment{res}{A 7.7 }{}Env.",
                "results": r"It reaches \x 2.5. \begin{res}Kept 1.36.\end{res} There are $\arabic{page}$ pages. "
                           r"\def\loop{\loop}Then \loop. Fine."}
    out, struck = expand(sections)
    assert out == {"background": "Delimited. Env.", "results": "Kept 1.36. Fine."}
    reasons = {s.sentence: s.reason for s in struck}
    assert "delimited parameters" in reasons[r"\def\x#1.{#1}"]
    assert "environment" in reasons[r"\newenvironment{res}{A 7.7 }{}"]
    assert "delimited" in reasons[r"It reaches \x 2.5."] and "computed" in reasons["There are $\\arabic{page}$ pages."]
    assert "without end" in reasons[r"Then \loop."]
