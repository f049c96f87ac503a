"""The real configs of the Stable Diffusion families, as their diffusers repositories publish them (unet/config.json,
vae/config.json, text_encoder/config.json, scheduler/scheduler_config.json of stable-diffusion-v1-5, stable-diffusion-2-base,
stable-diffusion-2-1-base and stable-diffusion-2-1), written here so that tests build random-weight pipelines of each
family without a download. `reduced()` shrinks widths for CPU speed and keeps the structure: block and attention layout,
cross_attention_dim, prediction_type, upcast_attention, linear projections, and the head semantics (SD 2.x:
`attention_head_dim` is a head COUNT per block with 64-wide heads, kept at 64; SD 1.x: 8 heads per block, kept at 8)."""
import copy

DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

_UNET_COMMON = dict(act_fn="silu", block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
                    down_block_types=DOWN, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
                    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, out_channels=4,
                    up_block_types=UP)
_VAE = dict(act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3,
            latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
            up_block_types=["UpDecoderBlock2D"] * 4)
_BETAS = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
              set_alpha_to_one=False, steps_offset=1, clip_sample=False, trained_betas=None)
_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, hidden_act="quick_gelu",
               projection_dim=768, max_position_embeddings=77, vocab_size=49408)
_OPENCLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, hidden_act="gelu",
                   projection_dim=512, max_position_embeddings=77, vocab_size=49408)

FAMILIES = {
    "sd15": dict(unet=dict(_UNET_COMMON, attention_head_dim=8, cross_attention_dim=768, sample_size=64),
                 vae=_VAE, text_encoder=_CLIP_L,
                 scheduler=dict(_BETAS, _class_name="PNDMScheduler", skip_prk_steps=True)),
    "sd20-base": dict(unet=dict(_UNET_COMMON, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, sample_size=64,
                                use_linear_projection=True, dual_cross_attention=False, num_class_embeds=None,
                                only_cross_attention=False, upcast_attention=False),
                      vae=_VAE, text_encoder=_OPENCLIP_H,
                      scheduler=dict(_BETAS, _class_name="PNDMScheduler", skip_prk_steps=True, prediction_type="epsilon")),
    "sd21-base": dict(unet=dict(_UNET_COMMON, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, sample_size=64,
                                use_linear_projection=True, dual_cross_attention=False, num_class_embeds=None,
                                only_cross_attention=False, upcast_attention=False),
                      vae=_VAE, text_encoder=_OPENCLIP_H,
                      scheduler=dict(_BETAS, _class_name="PNDMScheduler", skip_prk_steps=True, prediction_type="epsilon")),
    "sd21": dict(unet=dict(_UNET_COMMON, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, sample_size=96,
                           use_linear_projection=True, dual_cross_attention=False, num_class_embeds=None,
                           only_cross_attention=False, upcast_attention=True),
                 vae=dict(_VAE, sample_size=768), text_encoder=_OPENCLIP_H,
                 scheduler=dict(_BETAS, _class_name="DDIMScheduler", prediction_type="v_prediction")),
}


def reduced(family: str, width_div: int = 5, latent: int = None, text_layers: int = 2) -> dict:
    """`family`'s configs at 1/`width_div` of the UNet widths (heads scaled so each head keeps its width semantics),
    latents of `latent` px (default 8 for the 512 px families, 16 for the 768 px one), a 2-layer text encoder of the real width, a narrow VAE."""
    c = copy.deepcopy(FAMILIES[family])
    u = c["unet"]
    widths = [w // width_div for w in u["block_out_channels"]]
    if isinstance(u["attention_head_dim"], list):   # SD 2.x: head counts, 64 wide each -> keep 64-wide heads
        u["attention_head_dim"] = [w // 64 for w in widths]
    u["block_out_channels"] = widths
    u["sample_size"] = latent or {64: 8, 96: 16}[u["sample_size"]]   # 64 / 128 px: inputs are multiples of 64 px
    c["vae"].update(block_out_channels=[32, 64, 128, 128], layers_per_block=1, sample_size=u["sample_size"] * 8)
    c["text_encoder"]["num_hidden_layers"] = text_layers
    return c

# UNets the method must refuse (their real configs): SDXL base 1.0, and SD 2's inpainting model (9 input channels)
SDXL_UNET = dict(act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
                 block_out_channels=[320, 640, 1280], center_input_sample=False, cross_attention_dim=2048,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], downsample_padding=1,
                 flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-05,
                 norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=128,
                 transformer_layers_per_block=[1, 2, 10], up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 use_linear_projection=True)
SD2_INPAINT_UNET = dict(FAMILIES["sd20-base"]["unet"], in_channels=9)
