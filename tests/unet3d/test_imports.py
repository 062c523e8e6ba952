import subprocess
import sys


def test_importing_unet3d_loads_no_service_or_training_dependency():
    code = (
        "import sys, unet3d, unet3d.cli, unet3d.batch, unet3d.predict_command;"
        "bad = [m for m in ('fastapi', 'starlette', 'gradio', 'uvicorn', 'pydantic_settings', 'optuna', 'api', 'train',"
        " 'ray') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_all_exported():
    import unet3d

    for name in unet3d.__all__:
        assert hasattr(unet3d, name), name
