"""Original GPQA-style items (Idavidrein/gpqa, gpqa_main schema), written for this project.

Each entry is a short graduate-level question with one correct answer, three incorrect answers
built from the typical mistakes (wrong state, inverted ratio, a missing factor) and the worked
explanation. They are easier than real GPQA items but checked by hand: the explanation carries the
computation. ``Record ID`` imitates the hub format (``rec`` + 14 characters), derived from the
question text so that it is stable.
"""

from __future__ import annotations

import hashlib
from typing import Any

# (domain, subdomain, question, correct, [incorrect x3], explanation)
ITEMS: list[tuple[str, str, str, str, list[str], str]] = [
    ("Physics", "Quantum Mechanics",
     "A particle is confined to a one-dimensional infinite square well. What is the ratio of the "
     "energy of its third excited state to the energy of its ground state?",
     "16", ["9", "4", "3"],
     "E_n is proportional to n^2 with n = 1 for the ground state, so the third excited state has "
     "n = 4 and E_4 / E_1 = 16."),
    ("Physics", "Relativistic Mechanics",
     "An unstable particle with proper lifetime tau moves at 0.8c in the laboratory. What lifetime "
     "does the laboratory measure?",
     "5 tau / 3", ["3 tau / 5", "5 tau / 4", "4 tau / 5"],
     "gamma = 1 / sqrt(1 - 0.64) = 1 / 0.6 = 5/3, and the lab sees the lifetime dilated to "
     "gamma tau = 5 tau / 3."),
    ("Physics", "Electromagnetism and Photonics",
     "Two point charges a distance d apart repel with force F. Both charges are doubled and the "
     "distance is tripled. What is the new force?",
     "4F/9", ["4F/3", "2F/9", "9F/4"],
     "Coulomb's law scales as q1 q2 / r^2: the product of charges grows by 4 and r^2 by 9, so the "
     "force becomes 4F/9."),
    ("Physics", "Thermodynamics",
     "A reversible refrigerator takes heat from a cold reservoir at 250 K and rejects heat into a "
     "room at 300 K. What is its coefficient of performance?",
     "5", ["6", "0.2", "0.83"],
     "For a Carnot refrigerator COP = T_c / (T_h - T_c) = 250 / 50 = 5 (6 is the heat-pump COP)."),
    ("Physics", "Optics and Acoustics",
     "Light with a vacuum wavelength of 600 nm enters glass of refractive index 1.5. What is its "
     "wavelength inside the glass?",
     "400 nm", ["900 nm", "600 nm", "267 nm"],
     "The frequency is unchanged and the speed drops by n, so the wavelength is 600 / 1.5 = 400 nm."),
    ("Physics", "Astrophysics",
     "Two stars have equal radii, but the surface temperature of one is twice that of the other. "
     "Treating both as black bodies, what is the ratio of their luminosities?",
     "16", ["2", "4", "8"],
     "By the Stefan-Boltzmann law L = 4 pi R^2 sigma T^4; with equal radii the ratio is 2^4 = 16."),
    ("Physics", "Classical Mechanics",
     "A simple pendulum has period T on Earth. On a planet whose surface gravity is four times "
     "Earth's, what is its period (small oscillations)?",
     "T/2", ["2T", "T/4", "4T"],
     "T = 2 pi sqrt(L/g); multiplying g by 4 divides the period by sqrt(4) = 2."),
    ("Chemistry", "Physical Chemistry",
     "A first-order reaction has a half-life of 10 minutes. What fraction of the reactant remains "
     "after 40 minutes?",
     "1/16", ["1/4", "1/8", "1/32"],
     "40 minutes are four half-lives, and (1/2)^4 = 1/16."),
    ("Chemistry", "General Chemistry",
     "What is the pH of a 0.001 M aqueous solution of NaOH at 25 degrees Celsius?",
     "11", ["3", "10", "12"],
     "NaOH dissociates fully: [OH-] = 1e-3 M, so pOH = 3 and pH = 14 - 3 = 11."),
    ("Chemistry", "Organic Chemistry",
     "How many stereoisomers does 2,3-dibromobutane have?",
     "3", ["4", "2", "1"],
     "Two stereocentres allow at most 4, but the (2R,3S) form is identical to (2S,3R): a meso "
     "compound. That leaves one pair of enantiomers plus the meso form, 3 in total."),
    ("Chemistry", "Inorganic Chemistry",
     "What is the hybridization of the sulfur atom in sulfur hexafluoride, SF6?",
     "sp3d2", ["sp3", "sp3d", "dsp2"],
     "Sulfur forms six equivalent bonds in an octahedral geometry, described by sp3d2 hybrids."),
    ("Chemistry", "Quantum Chemistry",
     "According to molecular orbital theory, how many unpaired electrons does a ground-state O2 "
     "molecule have?",
     "2", ["0", "1", "4"],
     "The last two electrons occupy the two degenerate pi* orbitals singly with parallel spins "
     "(Hund's rule), so O2 is paramagnetic with 2 unpaired electrons."),
    ("Chemistry", "General Chemistry",
     "How many moles of O2 are needed to burn one mole of propane (C3H8) completely to CO2 and H2O?",
     "5", ["3", "4", "7"],
     "C3H8 + 5 O2 -> 3 CO2 + 4 H2O: 3 x 2 + 4 x 1 = 10 oxygen atoms, i.e. 5 O2."),
    ("Biology", "Genetics",
     "In a population in Hardy-Weinberg equilibrium, 16% of individuals show a recessive phenotype. "
     "What percentage of the population are heterozygous carriers?",
     "48%", ["36%", "24%", "84%"],
     "q^2 = 0.16 gives q = 0.4 and p = 0.6, so 2pq = 2 x 0.6 x 0.4 = 0.48."),
    ("Biology", "Molecular Biology",
     "The coding region of an mRNA is 90 nucleotides long, from the first base of the start codon "
     "to the last base of the stop codon. How many amino acids does the encoded peptide contain?",
     "29", ["30", "90", "31"],
     "90 nucleotides are 30 codons; the stop codon codes for no amino acid, so 29 remain "
     "(the start codon's methionine included)."),
    ("Biology", "Molecular Biology",
     "A double-stranded DNA sample contains 30% adenine. What percentage of its bases are guanine?",
     "20%", ["30%", "40%", "70%"],
     "A pairs with T, so A + T = 60%; the remaining 40% is G + C in equal amounts: 20% guanine."),
    ("Biology", "Genetics",
     "Two individuals heterozygous for two unlinked genes (AaBb x AaBb) are crossed. What fraction "
     "of the offspring are homozygous recessive for both genes?",
     "1/16", ["1/4", "3/16", "9/16"],
     "Each gene independently gives aa with probability 1/4, so aabb has probability 1/16."),
    ("Biology", "Biochemistry",
     "For an enzyme that follows Michaelis-Menten kinetics, at what substrate concentration is the "
     "reaction rate half of its maximum rate?",
     "[S] = Km", ["[S] = 2 Km", "[S] = Km / 2", "[S] = Vmax / 2"],
     "v = Vmax [S] / (Km + [S]) equals Vmax / 2 exactly when [S] = Km."),
]


def record_id(question: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    number = int(hashlib.sha256(question.encode()).hexdigest(), 16)
    chars = []
    for _ in range(14):
        number, digit = divmod(number, len(alphabet))
        chars.append(alphabet[digit])
    return "rec" + "".join(chars)


def gpqa_rows(seed: int) -> list[dict[str, Any]]:
    """All items in table order (``seed`` is unused: GPQA has only an eval split to fill)."""
    rows = []
    for domain, subdomain, question, correct, wrong, explanation in ITEMS:
        rows.append({
            "Question": question,
            "Correct Answer": correct,
            "Incorrect Answer 1": wrong[0],
            "Incorrect Answer 2": wrong[1],
            "Incorrect Answer 3": wrong[2],
            "Explanation": explanation,
            "Record ID": record_id(question),
            "High-level domain": domain,
            "Subdomain": subdomain,
        })
    return rows
