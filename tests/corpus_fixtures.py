"""Small source files written in each corpus source's published schema, with the documents they must give.

PubMed: NLM PubMed DTD (PubmedArticleSet/PubmedArticle/MedlineCitation/Article/Abstract/AbstractText[@Label,
@NlmCategory]); PMC: JATS 1.3 (article/front/article-meta, body/sec/title/p, table-wrap, fig/caption,
back/ref-list); MIMIC-III NOTEEVENTS and MIMIC-IV-Note discharge column lists; MIMIC-CXR files/pNN/p<subject>/
s<study>.txt. Every value is invented.
"""
from __future__ import annotations

import csv
import gzip
import os

PUBMED_XML = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">
<PubmedArticleSet>
<PubmedArticle>
  <MedlineCitation Status="MEDLINE" Owner="NLM" IndexingMethod="Automated">
    <PMID Version="1">38000001</PMID>
    <DateCompleted><Year>2024</Year><Month>01</Month><Day>02</Day></DateCompleted>
    <Article PubModel="Print-Electronic">
      <Journal>
        <ISSN IssnType="Electronic">1234-5678</ISSN>
        <JournalIssue CitedMedium="Internet"><Volume>12</Volume><Issue>3</Issue>
          <PubDate><Year>2023</Year><Month>Dec</Month></PubDate></JournalIssue>
        <Title>Journal of Clinical Examples</Title>
        <ISOAbbreviation>J Clin Ex</ISOAbbreviation>
      </Journal>
      <ArticleTitle>Effect of \u03b2-blockers on <i>Staphylococcus</i> sepsis in Z\u00fcrich.</ArticleTitle>
      <Pagination><MedlinePgn>1-10</MedlinePgn></Pagination>
      <Abstract>
        <AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Sepsis remains a leading
          cause of death in older adults.</AbstractText>
        <AbstractText Label="METHODS" NlmCategory="METHODS">We enrolled 120 patients aged \u226565 years.</AbstractText>
        <AbstractText Label="RESULTS" NlmCategory="RESULTS">Mortality fell from 30% to 21% (p&lt;0.05).</AbstractText>
        <CopyrightInformation>\u00a9 2023 The Authors.</CopyrightInformation>
      </Abstract>
      <AuthorList CompleteYN="Y"><Author ValidYN="Y"><LastName>M\u00fcller</LastName><ForeName>Anna</ForeName>
        <Initials>A</Initials></Author></AuthorList>
      <Language>eng</Language>
      <PublicationTypeList><PublicationType UI="D016428">Journal Article</PublicationType></PublicationTypeList>
    </Article>
    <MedlineJournalInfo><Country>Switzerland</Country><MedlineTA>J Clin Ex</MedlineTA></MedlineJournalInfo>
    <CommentsCorrectionsList><CommentsCorrections RefType="CommentIn"><RefSource>J Clin Ex. 2024</RefSource>
      <PMID Version="1">38000099</PMID></CommentsCorrections></CommentsCorrectionsList>
  </MedlineCitation>
  <PubmedData>
    <PublicationStatus>ppublish</PublicationStatus>
    <ArticleIdList><ArticleId IdType="pubmed">38000001</ArticleId></ArticleIdList>
    <ReferenceList><Reference><Citation>A cited paper that is not part of the abstract.</Citation></Reference></ReferenceList>
  </PubmedData>
</PubmedArticle>
<PubmedArticle>
  <MedlineCitation Status="PubMed-not-MEDLINE" Owner="NLM">
    <PMID Version="1">38000002</PMID>
    <Article PubModel="Electronic">
      <Journal><JournalIssue CitedMedium="Internet"><PubDate><MedlineDate>2022 Nov-Dec</MedlineDate></PubDate>
        </JournalIssue><Title>Revista M\u00e9dica</Title></Journal>
      <ArticleTitle>[Diagnosis of community-acquired pneumonia in children].</ArticleTitle>
      <Abstract><AbstractText>Chest radiography confirmed pneumonia in 45 of 60 children with fever and
        tachypnoea; the na\u00efve clinical score missed 9.</AbstractText></Abstract>
      <Language>spa</Language>
    </Article>
  </MedlineCitation>
</PubmedArticle>
<PubmedArticle>
  <MedlineCitation Status="MEDLINE" Owner="NLM">
    <PMID Version="1">38000003</PMID>
    <Article PubModel="Print"><Journal><Title>Letters</Title></Journal>
      <ArticleTitle>A letter without an abstract.</ArticleTitle><Language>eng</Language></Article>
  </MedlineCitation>
</PubmedArticle>
</PubmedArticleSet>
"""
PUBMED_TEXTS = [
    "Effect of \u03b2-blockers on Staphylococcus sepsis in Z\u00fcrich.\n\n"
    "BACKGROUND: Sepsis remains a leading cause of death in older adults.\n"
    "METHODS: We enrolled 120 patients aged \u226565 years.\n"
    "RESULTS: Mortality fell from 30% to 21% (p<0.05).",
    "[Diagnosis of community-acquired pneumonia in children].\n\n"
    "Chest radiography confirmed pneumonia in 45 of 60 children with fever and tachypnoea; the na\u00efve "
    "clinical score missed 9.",
]
PUBMED_META = [{"pmid": "38000001", "journal": "J Clin Ex", "year": "2023", "language": "eng"},
               {"pmid": "38000002", "journal": "Revista M\u00e9dica", "year": "2022", "language": "spa"}]

JATS_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.3 20210610//EN" "JATS-archivearticle1-3.dtd">
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML" article-type="research-article" dtd-version="1.3">
 <front>
  <journal-meta><journal-id journal-id-type="nlm-ta">BMC Med</journal-id>
   <journal-title-group><journal-title>BMC Medicine</journal-title></journal-title-group></journal-meta>
  <article-meta>
   <article-id pub-id-type="pmid">37000002</article-id>
   <article-id pub-id-type="pmc">PMC9000001</article-id>
   <article-id pub-id-type="doi">10.1186/s12916-023-00001</article-id>
   <title-group><article-title>Renal outcomes after <italic>SGLT2</italic> inhibition</article-title></title-group>
   <pub-date pub-type="epub"><day>3</day><month>2</month><year>2023</year></pub-date>
   <abstract><sec><title>Background</title><p>Kidney disease progresses in diabetes.</p></sec>
    <sec><title>Conclusions</title><p>SGLT2 inhibitors slow the decline.</p></sec></abstract>
   <abstract abstract-type="graphical"><p>Graphical abstract text.</p></abstract>
  </article-meta>
 </front>
 <body>
  <sec id="s1"><label>1</label><title>Introduction</title>
   <p>Chronic kidney disease affects
      many adults [<xref ref-type="bibr" rid="B1">1</xref>, <xref ref-type="bibr" rid="B2">2</xref>].</p>
   <p>See <xref ref-type="table" rid="T1">Table 1</xref> for the cohort.</p>
   <sec id="s1.1"><label>1.1</label><title>Aims</title><p>We asked whether eGFR declines slower.</p></sec>
  </sec>
  <sec id="s2"><label>2</label><title>Results</title>
   <p>The decline was 2.1 mL/min per year.<table-wrap id="T1" position="float"><label>Table 1</label>
     <caption><p>Cohort characteristics</p></caption>
     <table><thead><tr><th>Group</th><th>n</th></tr></thead><tbody><tr><td>Treated</td><td>40</td></tr>
     </tbody></table></table-wrap></p>
   <fig id="F1"><label>Figure 1</label><caption><p>Kaplan\u2013Meier curves of eGFR.</p></caption>
    <graphic xlink:href="f1.jpg"/></fig>
   <disp-formula id="E1"><mml:math><mml:mi>y</mml:mi><mml:mo>=</mml:mo><mml:mi>x</mml:mi></mml:math></disp-formula>
   <p>Adverse events were rare (<inline-formula><mml:math><mml:mi>n</mml:mi></mml:math></inline-formula> = 3).</p>
  </sec>
 </body>
 <back>
  <ack><p>We thank the nurses.</p></ack>
  <ref-list><title>References</title>
   <ref id="B1"><element-citation><article-title>Prior work on kidneys</article-title></element-citation></ref>
  </ref-list>
 </back>
</article>
"""
_JATS_HEAD = ("Renal outcomes after SGLT2 inhibition\n\nBackground\n\nKidney disease progresses in diabetes.\n\n"
              "Conclusions\n\nSGLT2 inhibitors slow the decline.\n\nIntroduction\n\nChronic kidney disease affects "
              "many adults.\n\nSee Table 1 for the cohort.\n\nAims\n\nWe asked whether eGFR declines slower.\n\n"
              "Results\n\nThe decline was 2.1 mL/min per year.")
JATS_TEXT = _JATS_HEAD + "\n\nAdverse events were rare (n = 3)."
JATS_TEXT_ALL = (_JATS_HEAD + "\n\nCohort characteristics\nGroup | n\nTreated | 40\n\nKaplan\u2013Meier curves of eGFR."
                 "\n\nAdverse events were rare (n = 3).")
JATS_META = {"pmcid": "PMC9000001", "pmid": "37000002", "doi": "10.1186/s12916-023-00001",
             "journal": "BMC Medicine", "year": "2023"}

MIMIC3_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
                 "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
MIMIC3_NOTE_1 = ('Admission Date:  [**2151-7-16**]       Discharge Date:  [**2151-8-4**]\n\n'
                 'Service: MEDICINE\n\nHISTORY: "fever" and cough for 3 days, seen at [**Hospital1 18**] by '
                 'Dr. [**First Name8 (NamePattern2) **] [**Known lastname 1234**].\n')
MIMIC3_NOTE_2 = "Patient alert, oriented x3. Vitals stable overnight."
MIMIC3_ROWS = [
    ["174", "22532", "167853", "2151-08-04", "", "", "Discharge summary", "Report", "", "", MIMIC3_NOTE_1],
    ["175", "13702", "107527", "2118-06-14", "2118-06-14 04:12:00", "2118-06-14 04:30:00", "Nursing/other",
     "Report", "17043", "", MIMIC3_NOTE_2],
    ["176", "13702", "107527", "2118-06-14", "2118-06-14 05:00:00", "", "Nursing/other", "Report", "17043", "1",
     "This note was entered for the wrong patient."],
]
MIMIC3_TEXTS = {
    "keep": [MIMIC3_NOTE_1.strip(), MIMIC3_NOTE_2],
    "mask": ['Admission Date:  ___       Discharge Date:  ___\n\nService: MEDICINE\n\nHISTORY: "fever" and cough '
             'for 3 days, seen at ___ by Dr. ___ ___.', MIMIC3_NOTE_2],
    "label": ['Admission Date:  [**Date**]       Discharge Date:  [**Date**]\n\nService: MEDICINE\n\nHISTORY: '
              '"fever" and cough for 3 days, seen at [**Hospital**] by Dr. [**First Name**] [**Known lastname**].',
              MIMIC3_NOTE_2],
}
MIMIC3_META = [{"note_id": "174", "subject_id": "22532", "hadm_id": "167853", "category": "Discharge summary",
                "description": "Report", "chartdate": "2151-08-04", "charttime": None},
               {"note_id": "175", "subject_id": "13702", "hadm_id": "107527", "category": "Nursing/other",
                "description": "Report", "chartdate": "2118-06-14", "charttime": "2118-06-14 04:12:00"}]

MIMIC4_HEADER = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
MIMIC4_NOTE = (" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              Discharge Date:   ___\n"
               " \nSex:   F\n \nService: MEDICINE\n \nChief Complaint:\nabdominal pain\n \n")
MIMIC4_ROWS = [["10000032-DS-21", "10000032", "22595853", "DS", "21", "2180-05-07 00:00:00", "2180-05-09 15:26:00",
                MIMIC4_NOTE]]
MIMIC4_TEXT = MIMIC4_NOTE.strip()

CXR_REPORTS = {
    "p10/p10000032/s50414267.txt": ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n"
                                    " INDICATION:  ___F with new onset ascites  // eval for infection\n \n"
                                    " FINDINGS: \n \n There is no focal consolidation.\n \n \n IMPRESSION: \n \n"
                                    " No acute cardiopulmonary process.\n"),
    "p10/p10000764/s57375967.txt": ("                                 FINAL REPORT\n EXAMINATION:  CHEST PORTABLE\n \n"
                                    " IMPRESSION: \n \n Endotracheal tube 4 cm above the carina.\n"),
}
CXR_TEXTS = ["FINAL REPORT\nEXAMINATION:  CHEST (PA AND LAT)\n\nINDICATION:  ___F with new onset ascites  // eval for "
             "infection\n\nFINDINGS:\n\nThere is no focal consolidation.\n\nIMPRESSION:\n\nNo acute cardiopulmonary "
             "process.",
             "FINAL REPORT\nEXAMINATION:  CHEST PORTABLE\n\nIMPRESSION:\n\nEndotracheal tube 4 cm above the carina."]


def write_csv(path: str, header, rows) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_MINIMAL).writerows([header, *rows])  # PhysioNet's CSV dialect
    return path


def write_sources(root: str) -> dict:
    """Every fixture under root; returns their paths."""
    os.makedirs(root, exist_ok=True)
    pubmed = os.path.join(root, "pubmed", "pubmed25n0001.xml.gz")
    os.makedirs(os.path.dirname(pubmed), exist_ok=True)
    with gzip.open(pubmed, "wt", encoding="utf-8") as f:
        f.write(PUBMED_XML)
    jats = os.path.join(root, "pmc", "PMC9000001.nxml")
    os.makedirs(os.path.dirname(jats), exist_ok=True)
    with open(jats, "w", encoding="utf-8") as f:
        f.write(JATS_XML)
    mimic3 = write_csv(os.path.join(root, "mimic3", "NOTEEVENTS.csv.gz"), MIMIC3_HEADER, MIMIC3_ROWS)
    mimic4 = write_csv(os.path.join(root, "mimic4", "discharge.csv"), MIMIC4_HEADER, MIMIC4_ROWS)
    cxr = os.path.join(root, "mimic-cxr", "files")
    for rel, text in CXR_REPORTS.items():
        os.makedirs(os.path.join(cxr, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(cxr, rel), "w") as f:
            f.write(text)
    return dict(pubmed=pubmed, jats=jats, mimic3=mimic3, mimic4=mimic4, cxr=cxr)
