"""Everything that leaves the node for one study: SEG per segmentation, TID 1500 SR, PDF (+ SC).

One module per object (seg, sr, report, display_copy) and `objects.build_result_objects` composing them. This
package's own module imports nothing, so that e.g. `dicomnode.results.codes` loads without matplotlib.
"""
