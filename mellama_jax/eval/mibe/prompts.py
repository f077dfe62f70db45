"""Me-LLaMA's prompt templates, vendored from BIDS-Xu-Lab/Me-LLaMA `src/preprocess_instruct.py` (commit 08c893f).

These strings are data: the released test sets' `query` fields are these templates filled in, so
mellama-build-mibe must reproduce them byte for byte (leading newlines and indentation included).
`{text}`, `{context}`, `{options}`, `{question}` are filled by mellama_jax/eval/mibe/build.py.

Me-LLaMA publishes no builder (and its evaluation sets are gated or local) for i2b2 and BioNLI; the two
templates marked OURS below are not Me-LLaMA's: they follow the shape of its other prompts (MedNLI's
TASK/###/INPUT/OUTPUT frame) and ask for the answer form its scorer reads (docs/evaluation.md).

Me-LLaMA's code is under the MIT License:

    Copyright (c) BIDS-Xu-Lab (Me-LLaMA authors)

    Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
    associated documentation files (the "Software"), to deal in the Software without restriction, including
    without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
    following conditions: The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
    LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
    EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
    IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
    THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""
# flake8: noqa: E501  (the templates are kept on one line each, exactly as released)

# MedNLI (preprocess_instruct.py:125)
MEDNLI = '\nTASK: Please classify the relationship between the given premise and hypothesis into one of the following labels: entailment, contradiction, or neutral. Return only the label.\n###\nINPUT: {text}\nOUTPUT:\n'

# PubmedQA (preprocess_instruct.py:186)
PUBMEDQA = 'As an expert doctor in clinical science and medical knowledge, can you tell me if the following statement is correct? Answer yes, no, or maybe.\n{context}\n{text}\nThe answer is:\n'

# MedQA (preprocess_instruct.py:203)
MEDQA = 'You are a medical doctor taking the US Medical Licensing Examination. You need to demonstrate your understanding of basic and clinical science, medical knowledge, and mechanisms underlying health, disease, patient care, and modes of therapy. Show your ability to apply the knowledge essential for medical practice. For the following multiple-choice question, select one correct answer from A to E. Base your answer on the current and standard practices referenced in medical guidelines.\nQuestion: {text}\n\nOptions:\n{options}\n\nThe answer is\n'

# MedMCQA (preprocess_instruct.py:226)
MEDMCQA = 'You are a medical doctor answering realworld medical entrance exam questions. Based on your understanding of basic and clinical science, medical knowledge, and mechanisms underlying health, disease, patient care, and modes of therapy, answer the following multiple-choice question. Select one correct answer from A to D. Base your answer on the current and standard practices referenced in medical guidelines.\nQuestion: {text}\n\nOptions:\n{options}\n\nThe answer is\n'

# DDI2013 (preprocess_instruct.py:267)
DDI2013 = "TASK: The input is a sentence where the drug is labeled as @DRUG$. Extract the relationship between 2 @DRUG$ from the input sentence by selecting only one of the following options: 'DDI-effect', 'DDI-mechanism', 'DDI-advise', 'DDI-false', and 'DDI-int'.\nDDI-effect, this type is used to annotate DDIs describing an effect or a pharmacodynamic mechanism\nDDI-mechanism, this type is used to annotate DDIs that are described by their pharmacokinetic mechanism\nDDI-advise, this type is used when a recommendation or advice regarding a drug interaction is given\nDDI-false, this type is used when no DDI relation appears\nDDI-int, this type is used when a DDI appears in the text without providing any additional information\n###\nINPUT: {text}\nOUTPUT:\n"

# HoC (preprocess_instruct.py:300)
HOC = 'The task is to decide the Hallmarks of Cancer (HOC) taxonomy of the article based on its abstract. The input is an abstract text. There are 10 topics you will need to decide whether the article is related to. Topics: sustaining proliferative signaling, evading growth suppressors, resisting cell death, enabling replicative immortality, inducing angiogenesis, activating invasion and metastasis, genomic instability and mutation, tumor promoting inflammation, cellular energetics, avoiding immune destruction. The output should be topics from the above 10 topics, that are related to the input article. Please note one article can be related to multiple topics. Output format: provide a semicolon-separated list of relevant topics.\n    ###\n    INPUT: {text}\n    OUTPUT:\n'

# PubmedSumm (preprocess_instruct.py:399)
PUBMED_SUM = '***TASK***\nthe task is to summarize an input biomedical literature in six sentences\n\n***INPUT***\nthe input is a biomedical literature\n\n***OUTPUT***\nthe output is the summary of an input biomedical literature in six sentences\n\n***DOCUMENTATION***\n\n***EXAMPLES***\n\nInput: {text}\nOutput:\n'

# MIMIC_SUM (preprocess_instruct.py:689)
MIMIC_CXR = 'Derive the impression from findings in the radiology report.\n    INPUT: {text}\n    OUTPUT:\n    '

# MTSample (preprocess_instruct.py:164)
MTSAMPLE_CHOICES = ('Surgery', 'Allergy / Immunology', 'Sleep Medicine', 'Pediatrics - Neonatal', 'SOAP / Chart / Progress Notes', 'Bariatrics', 'Pain Management', 'Lab Medicine - Pathology', 'Dermatology', 'Orthopedic', 'Dentistry', 'Psychiatry / Psychology', 'General Medicine', 'Office Notes', 'Letters', 'Neurosurgery', 'Radiology', 'Cosmetic / Plastic Surgery', 'Nephrology', 'Diets and Nutritions', 'Chiropractic', 'Gastroenterology', 'Cardiovascular / Pulmonary', 'Speech - Language', 'Hospice - Palliative Care', 'Autopsy', 'Endocrinology', 'Emergency Room Reports', 'Discharge Summary', 'ENT - Otolaryngology', 'Urology', 'Physical Medicine - Rehab', 'Neurology', 'Podiatry', 'Ophthalmology', 'Rheumatology', 'IME-QME-Work Comp etc.', 'Hematology - Oncology', 'Consult - History and Phy.', 'Obstetrics / Gynecology')

# MTSample (preprocess_instruct.py:165)
MTSAMPLE = "\nTASK: The task is to determine the medical specialty or domain that a medical transcription belongs to. The input is a medical transcription. There are 40 medical specialties or domains and you need to decide which one is the transcription related to. The medical specialties or domains are: 'Surgery', 'Allergy / Immunology', 'Sleep Medicine', 'Pediatrics - Neonatal', 'SOAP / Chart / Progress Notes', 'Bariatrics', 'Pain Management', 'Lab Medicine - Pathology', 'Dermatology', 'Orthopedic', 'Dentistry', 'Psychiatry / Psychology', 'General Medicine', 'Office Notes', 'Letters', 'Neurosurgery', 'Radiology', 'Cosmetic / Plastic Surgery', 'Nephrology', 'Diets and Nutritions', 'Chiropractic', 'Gastroenterology', 'Cardiovascular / Pulmonary', 'Speech - Language', 'Hospice - Palliative Care', 'Autopsy', 'Endocrinology', 'Emergency Room Reports', 'Discharge Summary', 'ENT - Otolaryngology', 'Urology', 'Physical Medicine - Rehab', 'Neurology', 'Podiatry', 'Ophthalmology', 'Rheumatology', 'IME-QME-Work Comp etc.', 'Hematology - Oncology', 'Consult - History and Phy.', 'Obstetrics / Gynecology'. The output should be only one medical specialty or domain from the above 40 specialties or domains, that is most relevant to the medical transcription. Please note that each medical transcript can only be related to one medical specialty or domain. Output format: provide the name of the medical specialty or domain.\n###\nINPUT: {text}\nOUTPUT:\n"

# EmrQA (preprocess_instruct.py:143-149; "Question" without a colon, as released)
EMRQA = '\nTASK: Given a medical context and an open-ended question related to it, extract the relevant text segment from the context as an answer. Expected output: Only extract and return the text segment from the provided context that directly answers the question. Do not add any new words.\n###\nContext: {text}\nQuestion {question}\nAnswer:\n'

# i2b2 2010 concepts: OURS (Me-LLaMA's I2B2 task reads a local, unpublished set). The answer is the
# sentence with each concept in <span class="problem|treatment|test">, what vital_measure.py NER.html2bio reads.
I2B2 = '\nTASK: Extract the medical problems, treatments and tests mentioned in the input sentence from a clinical note. Return the input sentence unchanged, with every problem marked as <span class="problem">...</span>, every treatment as <span class="treatment">...</span> and every test as <span class="test">...</span>.\n###\nINPUT: {text}\nOUTPUT:\n'

# BioNLI: OURS (clinicalnlplab/BioNLI_test is gated and no builder is published): MedNLI's prompt with
# BioNLI's two labels; the premise is the supporting abstract sentences, the hypothesis the conclusion.
BIONLI = '\nTASK: Please classify the relationship between the given premise and hypothesis into one of the following labels: entailment or contradiction. Return only the label.\n###\nINPUT: {text}\nOUTPUT:\n'
