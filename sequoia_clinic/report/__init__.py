"""The report stage: patient PDF, result.json and DICOM Encapsulated PDF from one :class:`ReportData`.

``render_report_pdf`` writes the PDF, ``result_dict`` builds the result.json document (validated by
``schema.validate_result``), ``dicom.write_encapsulated_pdf`` wraps the PDF for PACS, and
``deidentify.deidentify_report`` replaces identifying fields with pseudonyms before any of them.

Import what you need from its module (``model``, ``pdf``, ``result``, ``schema``): this package imports
nothing itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ...
are imported only by the modules that use them).
"""
