"""The FHIR R4 facade: Patient and AllergyIntolerance over records and the chart."""
