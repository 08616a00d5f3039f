"""Privacy measurements on arrays, independent of any method: the DP gallery release
(`dp`), the attackers (`feature_attack`, `inversion`, trained by `fitting`) and the
held-out split they are scored on (`holdout`)."""
