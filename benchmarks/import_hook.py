"""Source text shared by the benchmarks' probes (each written as a sitecustomize.py into a
folder put on PYTHONPATH of the melset run it times): `_after(module_name, patch)` patches a
module right after it is first imported, so no process imports more than it would."""

AFTER_IMPORT = '''
import importlib.util, sys

def _after(module_name, patch):
    class Hook:
        def find_spec(self, name, path=None, target=None):
            if name != module_name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Hook())
'''
